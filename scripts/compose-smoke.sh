#!/usr/bin/env bash
# Compose smoke test: starts NATS, the OneLogin simulator and the worker from
# docker-compose.yml with the images built here (make compose-images), waits
# for the worker's health check (`worker health`), submits one job from the
# host against the published NATS port, reads its result, the worker's
# metrics and its status page, then removes everything (down -v).
# Prometheus, Alertmanager and Grafana (profile observability) run images
# from a registry: they are checked with `config` only.
# Every wait is bounded; on failure it prints what failed and the logs.
#
# With --cluster it runs docker-compose.cluster.yml on top: three NATS
# servers with nkey authentication and sync_interval: always, two workers;
# it also checks that a client without the nkey is refused.
#
# Variables: MFA_IMAGE, MFA_DEV_IMAGE (the simulator's), NATS_IMAGE (the images), COMPOSE (the compose
# command), WORKER (the host binary, default bin/worker).
set -euo pipefail
cd "$(dirname "$0")/.."

compose_cmd=${COMPOSE:-}
if [ -z "$compose_cmd" ]; then
  if docker compose version >/dev/null 2>&1; then compose_cmd="docker compose"; else compose_cmd=docker-compose; fi
fi
worker=${WORKER:-bin/worker}
cluster=
[ "${1:-}" = --cluster ] && cluster=1
project=mfa-smoke-$$
files=(-f docker-compose.yml)
workers=(worker)
if [ -n "$cluster" ]; then
  files+=(-f docker-compose.cluster.yml)
  workers+=(worker-2)
  export NATS_NKEY=deploy/compose/secrets/nats-worker.nk
fi
# Every host port empty: Docker picks free ones, so this runs beside
# anything else on the machine.
export MFA_NATS_PORT= MFA_NATS_MONITOR_PORT= MFA_SIM_PORT= MFA_WORKER_PORT= MFA_WORKER_2_PORT=
export COMPOSE_PROJECT_NAME=$project
compose() { $compose_cmd "${files[@]}" "$@"; }

fail() {
  echo "compose-smoke: FAILED: $*" >&2
  compose ps >&2 || true
  for s in $(compose ps --services 2>/dev/null); do
    id=$(compose ps -q "$s" 2>/dev/null || true)
    [ -n "$id" ] || continue
    echo "--- $s health: $(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id" 2>/dev/null)" >&2
    docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$id" 2>/dev/null | tail -5 >&2 || true
  done
  compose logs --no-color --tail 60 >&2 || true
  exit 1
}
cleanup() {
  compose down -v --remove-orphans >/dev/null 2>&1 || echo "compose-smoke: down -v failed for project $project" >&2
}
trap cleanup EXIT

for img in "${MFA_IMAGE:-mfa-worker:latest}" "${MFA_DEV_IMAGE:-mfa-worker-dev:latest}" "${NATS_IMAGE:-}"; do
  [ -z "$img" ] || docker image inspect "$img" >/dev/null 2>&1 || fail "image $img is missing: run make compose-images"
done
[ -x "$worker" ] || fail "$worker is missing: run make build"
[ -s deploy/compose/secrets/onelogin-client-secret ] || fail "secrets are missing: run make compose-secrets"

echo "compose-smoke: config of every service (Prometheus, Alertmanager and Grafana are not started here)"
compose config -q || fail "docker-compose.yml is invalid"
compose --profile ingest config -q || fail "docker-compose.yml with the ingest profile is invalid"
compose --profile ingest --profile observability config -q || fail "docker-compose.yml with every profile is invalid"
$compose_cmd -f docker-compose.yml -f docker-compose.cluster.yml config -q || fail "the cluster overlay is invalid"

echo "compose-smoke: up ${workers[*]} and what they depend on (project $project${cluster:+, cluster})"
timeout 300 $compose_cmd "${files[@]}" up -d "${workers[@]}" || fail "compose up did not finish within 300 s"

for w in "${workers[@]}"; do
  id=$(compose ps -q "$w")
  [ -n "$id" ] || fail "no $w container"
  status=
  for _ in $(seq 1 120); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$id")
    [ "$status" = healthy ] && break
    sleep 1
  done
  [ "$status" = healthy ] || fail "$w is not healthy after 120 s (status $status)"
done
for s in $(compose ps --services); do
  id=$(compose ps -q "$s")
  [ -z "$id" ] || echo "compose-smoke: $s is $(docker inspect -f '{{.State.Health.Status}}' "$id")"
done

nats_addr=$(compose port nats 4222 | tail -1)
worker_addr=$(compose port worker 9464 | tail -1)
[ -n "$nats_addr" ] && [ -n "$worker_addr" ] || fail "no published ports (nats '$nats_addr', worker '$worker_addr')"
nats_addr=127.0.0.1:${nats_addr##*:}
worker_addr=127.0.0.1:${worker_addr##*:}

# The host's view of readiness, through the same command the health check runs.
"$worker" health --quiet "http://$worker_addr/readyz" || fail "worker health from the host"

if [ -n "$cluster" ]; then
  if NATS_NKEY= timeout 30 "$worker" submit offboard --nats-url "nats://$nats_addr" --user 4242 >/dev/null 2>&1; then
    fail "NATS accepted a client without the nkey"
  fi
  echo "compose-smoke: a client without the nkey is refused"
  mon=$(compose port nats 8222 | tail -1)
  curl -sf "http://127.0.0.1:${mon##*:}/varz" | tr -d ' \n' | grep -q '"sync_always":true' ||
    fail "nats-1 does not run with sync_interval: always"
  echo "compose-smoke: nats-1 runs with sync_interval: always"
fi

job_id=compose-smoke-$$-$(date +%s)
echo "compose-smoke: submitting enroll $job_id to nats://$nats_addr"
out=$(timeout 90 "$worker" submit enroll --nats-url "nats://$nats_addr" --user 4242 --id "$job_id" \
  --factor-name "OneLogin SMS" --display-name "Compose smoke" --number +15551230000 \
  --wait --timeout 60s 2>/tmp/compose-smoke-submit.$$) || {
  cat /tmp/compose-smoke-submit.$$ >&2; rm -f /tmp/compose-smoke-submit.$$
  echo "$out" >&2; fail "submit --wait did not succeed"
}
rm -f /tmp/compose-smoke-submit.$$
result=$(tr -d ' \n' <<<"$out")
grep -q "\"job_id\":\"$job_id\"" <<<"$result" || { echo "$out" >&2; fail "the result does not name job $job_id"; }
grep -q '"outcome":"succeeded"' <<<"$result" || { echo "$out" >&2; fail "the job did not succeed"; }
grep -q '"device_id":[0-9]' <<<"$result" || { echo "$out" >&2; fail "the result has no device_id"; }
echo "compose-smoke: result read: enroll $job_id succeeded"

# The job ran on one of the workers: their counts must add up to 1.
series='mfa_jobs_total{outcome="succeeded",type="enroll"}'
total=
for _ in $(seq 1 20); do
  total=0
  for w in "${workers[@]}"; do
    addr=$(compose port "$w" 9464 | tail -1)
    n=$(curl -sf "http://127.0.0.1:${addr##*:}/metrics" | awk -v s="$series" '$1 == s {print $2}')
    total=$((total + ${n:-0}))
  done
  [ "$total" = 1 ] && break
  sleep 0.5
done
[ "$total" = 1 ] || fail "the workers' /metrics count $series ${total:-?}, want 1"
echo "compose-smoke: /metrics counts it: $series 1"

# The status page is on in compose.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$worker_addr/status")
[ "$code" = 200 ] || fail "the status page answers $code, want 200"
echo "compose-smoke: the status page answers 200"

echo "compose-smoke: down -v"
trap - EXIT
compose down -v --remove-orphans || fail "compose down -v"
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "containers left behind: $left"
left=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left" ] || fail "volumes left behind: $left"
echo "compose-smoke: PASS"
