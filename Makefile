# mfa-worker. `make run` starts the worker with an embedded NATS JetStream
# server and the built-in OneLogin simulator; `make test` runs every test.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
FUZZTIME  ?= 10s

.PHONY: all build test test-unit fuzz lint run clean

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

clean:
	rm -rf bin
