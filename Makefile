# mfa-worker. `make run` starts the worker with an embedded NATS JetStream
# server and the built-in OneLogin simulator; `make test` runs every test.
# bin/worker is the production binary (no embedded NATS server, no
# simulator); bin/worker-dev (-tags dev) adds `worker dev` and
# `worker simulate`.

SHELL     := /bin/bash
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 10s
COMPOSE   ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

IMAGE     ?= mfa-worker:$(VERSION)
DEV_IMAGE ?= mfa-worker-dev:$(VERSION)
NATS_IMAGE ?= mfa-nats:$(NATS_VERSION)
NATS_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

.PHONY: all build build-dev image-dev bench-peers test test-unit test-browser test-dashboards fuzz lint run clean image image-nats image-smoke rules compose-config compose-images compose-secrets compose-smoke compose-smoke-cluster test-containers need-prometheus bench

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/worker ./cmd/worker

## build-dev: bin/worker-dev, the worker with `dev` and `simulate` (-tags dev).
build-dev:
	CGO_ENABLED=0 $(GO) build -tags dev -trimpath -ldflags '$(LDFLAGS)' -o bin/worker-dev ./cmd/worker

## test: unit and integration tests under the race detector, then a short fuzz run.
test: test-unit fuzz

test-unit:
	$(GO) test -race -count=1 -timeout 8m ./...
	$(GO) test -race -count=1 -timeout 8m -tags dev ./cmd/worker/
	cd bench && $(GO) test -race -count=1 -timeout 5m ./...

## test-browser: the status page in headless Chromium (Debian's chromium
## package): numbers on the page against /metrics, a person lookup, a
## screenshot for the README.
test-browser:
	$(GO) test -tags browser -count=1 -timeout 10m ./internal/status/...
	$(GO) test -tags browser -count=1 -timeout 10m -run 'TestStatusPageOfTheRealWorker' ./internal/app/

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/onelogin
	$(GO) test -run '^$$' -fuzz '^FuzzResultMsgIDInjective$$' -fuzztime $(FUZZTIME) ./internal/job

lint:
	$(GO) vet ./...
	$(GO) vet -tags dev ./cmd/worker/
	cd bench && $(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

## run: build bin/worker and bin/worker-dev, then run `worker-dev dev` (the
## built binary, so that Ctrl-C stops it cleanly, with no "make: *** Error 1").
## The banner's commands use bin/worker, the production binary. Flags go in
## ARGS: make run ARGS="--nats-port 4223 --http-addr 127.0.0.1:9465"
ARGS ?=
run: build build-dev
	./bin/worker-dev dev $(ARGS)

## image: the worker as a FROM scratch image (the production binary, static,
## non-root, CA roots compiled in).
image: build
	mkdir -p bin/image && cp bin/worker bin/image/worker
	docker build -f deploy/Dockerfile -t $(IMAGE) -t mfa-worker:latest \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) bin/image
	@echo "$(IMAGE): $$(docker image inspect -f '{{.Size}}' $(IMAGE)) bytes"

## image-dev: the same image from bin/worker-dev, for `worker simulate` in
## compose and the image smoke test; never for production.
image-dev: build-dev
	mkdir -p bin/image-dev && cp bin/worker-dev bin/image-dev/worker
	docker build -f deploy/Dockerfile -t $(DEV_IMAGE) -t mfa-worker-dev:latest \
		--build-arg TITLE=mfa-worker-dev \
		--build-arg DESCRIPTION="mfa-worker with dev and simulate (the OneLogin simulator): for trying it out, not for production" \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) bin/image-dev

## image-nats: nats-server from the module version in go.mod, FROM scratch, with
## the worker binary as its health probe (compose's health check).
image-nats: build
	mkdir -p bin/nats
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/nats/nats-server github.com/nats-io/nats-server/v2
	cp bin/worker bin/nats/worker
	docker build -f deploy/nats.Dockerfile -t $(NATS_IMAGE) -t mfa-nats:latest --build-arg VERSION=$(NATS_VERSION) bin/nats

## image-smoke: run the image: `worker version`, `worker simulate` refused
## (not in the production binary), then the dev image's `worker simulate`
## answering on its port.
image-smoke: image image-dev
	docker run --rm $(IMAGE) version
	@if docker run --rm $(IMAGE) simulate 2>/dev/null; then echo "$(IMAGE) runs simulate: the production image holds the simulator"; exit 1; fi
	scripts/image-smoke.sh $(DEV_IMAGE)

## bench: the benchmarks (about 15 minutes); regenerates docs/benchmarks.md, then
## the ingest benchmarks (accepted vs published events, event-to-result
## latency of 1,000 offboards), the history query over 100,000 results, and
## the leaver registry (query and evidence at 100,000 records, re-verification
## of 10,000 leavers beside running jobs).
bench: build build-dev
	mkdir -p docs
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 40m ./internal/bench/ \
		-args -report $(CURDIR)/docs/benchmarks.md -worker $(CURDIR)/bin/worker-dev
	set -o pipefail; { \
	  printf '\n## HR ingest and the history index\n\n'; \
	  printf 'Raw `go test -bench` lines of this run: signed CloudEvents accepted per second by one receiver with the mapper running, against a bare JetStream publish loop of the same bodies (ratio); event-to-result latency of an offboard under an idle worker; one person'"'"'s history among 100,000 results, and that of a person with an offboard and then 1,000 rejected jobs (ms per query).\n\n```\n'; \
	  $(GO) test -count=1 -run '^$$' -bench 'AcceptVsPublish' -benchtime 5000x -timeout 20m ./internal/ingest | grep '^Benchmark'; \
	  $(GO) test -count=1 -run '^$$' -bench 'EventToResult' -benchtime 1000x -timeout 20m ./internal/ingest | grep '^Benchmark'; \
	  $(GO) test -count=3 -run '^$$' -bench 'HistoryQuery' -timeout 20m ./internal/history | grep '^Benchmark'; \
	  printf '```\n\n## worker ingest under hostile load\n\n3,000 idle connections plus 300 concurrent unauthenticated 1 MiB uploads against the receiver in a process of its own; peak RSS (VmHWM) and the latency of valid signed events sent meanwhile (targets: under 128 MiB, under 200 ms); three runs.\n\n```\n'; \
	  { $(GO) test -count=3 -run '^$$' -bench 'IngestUnderLoad' -benchtime 1x -timeout 10m ./test/load || true; } | grep -E '^Benchmark|RSS peak|load average'; \
	  printf '```\n'; \
	  printf '\n## Leavers: registry query, evidence export, re-verification\n\n'; \
	  printf 'mfa.query.leavers over NATS with 100,000 records (target under 100 ms); `worker evidence` (leaver.Export) over the records of 100,000 offboards (target under 10 s); 10,000 leavers re-verified while the worker runs 4,000 jobs on the same OneLogin account (max-window-share must stay within WORKER_ASSURANCE_BUDGET, 0.05).\n\n```\n'; \
	  $(GO) test -count=1 -run '^$$' -bench 'QueryLeavers|Evidence' -benchtime 10x -timeout 20m ./internal/leaver | grep '^Benchmark'; \
	  $(GO) test -count=1 -run '^$$' -bench 'Reverify10000' -benchtime 1x -timeout 20m ./internal/assurance | grep '^Benchmark'; \
	  printf '```\n'; \
	} >> docs/benchmarks.md
	$(MAKE) bench-peers

## bench-peers: the worker beside a peer doing the same job (Watermill over
## JetStream; bench/peers, a Go module of its own) and a bare JetStream
## floor: 10,000 offboard jobs, 16-way, 3 rounds alternating (a few
## minutes). Writes its section of docs/benchmarks.md in place.
bench-peers:
	mkdir -p docs
	cd bench && $(GO) test -count=1 -run '^$$' -bench '^BenchmarkPeers$$' -benchtime 1x -timeout 30m ./peers/ \
		-args -report $(CURDIR)/docs/benchmarks.md

## test-containers: the fault suite (NATS in containers built here, the worker as host processes).
## Scenario h runs a real Prometheus (Debian's prometheus package, checked first).
test-containers: need-prometheus build image-nats
	TESTCONTAINERS_RYUK_DISABLED=true MFA_NATS_IMAGE=$(NATS_IMAGE) \
		$(GO) test -tags containers -count=1 -timeout 25m -v ./test/containers/ 2>&1 | tee bin/containers.log | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|harness_test.go|scenarios_test.go'; exit $${PIPESTATUS[0]}

need-prometheus:
	@command -v prometheus >/dev/null || { echo "make test-containers runs a real Prometheus: apt-get install prometheus"; exit 1; }

## rules: promtool checks and unit tests of the alert rules, the Prometheus
## configs (compose, cluster, and local: each with its rule file), the
## Alertmanager config and its routing of every alert. promtool
## and amtool come from Debian's prometheus and prometheus-alertmanager
## packages (.ci/run installs them).
rules:
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml
	promtool check config deploy/prometheus/prometheus.yml deploy/prometheus/prometheus.cluster.yml deploy/prometheus/prometheus.local.yml
	amtool check-config deploy/alertmanager/alertmanager.yml
	scripts/check-alert-routes.sh

## test-dashboards: a real Prometheus (Debian's prometheus package) with
## deploy/prometheus/prometheus.local.yml and the alert rules scrapes
## `worker dev` with its HR receiver; jobs and HR events are made so that
## every Grafana dashboard expression must return data, and every alert
## rule must evaluate without error.
test-dashboards:
	$(GO) test -tags 'prometheus dev' -count=1 -timeout 5m -run 'TestDashboardAgainstPrometheus' ./cmd/worker/

## compose-config: validate both compose files (all profiles), and check that
## they run the nats-server version of go.mod.
compose-config:
	$(COMPOSE) -f docker-compose.yml config -q
	$(COMPOSE) -f docker-compose.yml -f docker-compose.cluster.yml config -q
	$(COMPOSE) -f docker-compose.yml --profile ingest config -q
	$(COMPOSE) -f docker-compose.yml --profile ingest --profile observability config -q
	$(COMPOSE) -f docker-compose.yml -f docker-compose.cluster.yml --profile ingest --profile observability config -q
	@for f in docker-compose.yml docker-compose.cluster.yml; do \
		tags=$$(grep -o 'mfa-nats:[^}"]*' $$f | sort -u); \
		if [ "$$tags" != "mfa-nats:$(NATS_VERSION)" ]; then \
			echo "$$f runs $${tags:-no mfa-nats image}, go.mod has nats-server $(NATS_VERSION)"; exit 1; fi; \
	done; echo "compose files run mfa-nats:$(NATS_VERSION), the nats-server of go.mod"

## compose-images: the images docker-compose.yml runs by default (the
## simulator runs from the dev image).
compose-images: image image-dev image-nats

## compose-secrets: the files compose mounts as secrets (deploy/compose/secrets/).
compose-secrets:
	scripts/compose-secrets.sh

## compose-smoke: compose up of NATS, the simulator and the worker built here,
## one job submitted from the host and its result read, then down -v.
compose-smoke: compose-images compose-secrets
	MFA_IMAGE=$(IMAGE) MFA_DEV_IMAGE=$(DEV_IMAGE) NATS_IMAGE=$(NATS_IMAGE) COMPOSE="$(COMPOSE)" scripts/compose-smoke.sh

## compose-smoke-cluster: the same with docker-compose.cluster.yml (three NATS
## servers with nkey authentication, two workers); a few minutes.
compose-smoke-cluster: compose-images compose-secrets
	MFA_IMAGE=$(IMAGE) MFA_DEV_IMAGE=$(DEV_IMAGE) NATS_IMAGE=$(NATS_IMAGE) COMPOSE="$(COMPOSE)" scripts/compose-smoke.sh --cluster

clean:
	rm -rf bin
