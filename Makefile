# mfa-worker. `make run` starts the worker with an embedded NATS JetStream
# server and the built-in OneLogin simulator; `make test` runs every test.

SHELL     := /bin/bash
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 10s
COMPOSE   ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

IMAGE     ?= mfa-worker:$(VERSION)
NATS_IMAGE ?= mfa-nats:$(NATS_VERSION)
NATS_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

.PHONY: all build test test-unit fuzz lint run clean image image-nats image-smoke rules compose-config test-containers bench

all: lint test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/worker ./cmd/worker

## test: unit and integration tests under the race detector, then a short fuzz run.
test: test-unit fuzz

test-unit:
	$(GO) test -race -count=1 -timeout 8m ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/onelogin

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

run:
	$(GO) run ./cmd/worker dev

## image: the worker as a FROM scratch image (static binary, non-root, CA roots compiled in).
image: build
	mkdir -p bin/image && cp bin/worker bin/image/worker
	docker build -f deploy/Dockerfile -t $(IMAGE) -t mfa-worker:latest \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) bin/image

## image-nats: nats-server from the module version in go.mod, FROM scratch.
image-nats:
	mkdir -p bin/nats
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/nats/nats-server github.com/nats-io/nats-server/v2
	docker build -f deploy/nats.Dockerfile -t $(NATS_IMAGE) -t mfa-nats:latest --build-arg VERSION=$(NATS_VERSION) bin/nats

## image-smoke: run the image: `worker version`, then `worker simulate` answering on its port.
image-smoke: image
	docker run --rm $(IMAGE) version
	scripts/image-smoke.sh $(IMAGE)

## bench: the benchmarks (about 10 minutes); regenerates docs/benchmarks.md.
bench: build
	mkdir -p docs
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 40m ./internal/bench/ \
		-args -report $(CURDIR)/docs/benchmarks.md -worker $(CURDIR)/bin/worker

## test-containers: the fault suite (NATS in containers built here, the worker as host processes).
test-containers: build image-nats
	TESTCONTAINERS_RYUK_DISABLED=true MFA_NATS_IMAGE=$(NATS_IMAGE) \
		$(GO) test -tags containers -count=1 -timeout 25m -v ./test/containers/ 2>&1 | tee bin/containers.log | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|harness_test.go|scenarios_test.go'; exit $${PIPESTATUS[0]}

## rules: promtool checks and unit tests of the alert rules.
rules:
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

## compose-config: validate both compose files.
compose-config:
	$(COMPOSE) -f docker-compose.yml config -q
	$(COMPOSE) -f docker-compose.yml -f docker-compose.cluster.yml config -q

clean:
	rm -rf bin
