#!/usr/bin/env bash
# Runs `worker simulate` from the image (the dev image, mfa-worker-dev: the
# production image has no simulator) and checks that it answers on its
# port: a token request with the default credentials, in a form OneLogin
# documents (JSON body, HTTP Basic), must succeed.
set -euo pipefail
image=$1
name=mfa-image-smoke-$$
cleanup() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
docker run -d --name "$name" -p 127.0.0.1::8089 "$image" simulate --addr :8089 >/dev/null
port=$(docker port "$name" 8089/tcp | head -1 | sed 's/.*://')
for i in $(seq 1 50); do
  if body=$(curl -sf -u sim-client:sim-secret -H 'Content-Type: application/json' \
      -d '{"grant_type":"client_credentials"}' "http://127.0.0.1:$port/auth/oauth2/v2/token"); then
    echo "$body" | grep -q '"access_token"' && { echo "image answers on port 8089: token issued"; exit 0; }
  fi
  sleep 0.2
done
echo "the image did not answer on port 8089" >&2
docker logs "$name" >&2 || true
exit 1
