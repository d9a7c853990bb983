# hms-node — `make` lists the targets. Everything runs as root on this kind
# of machine; no target calls sudo.

SHELL := /bin/bash
GO    ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

export BPF2GO_CC    := clang-19
export BPF2GO_STRIP := llvm-strip-19

.DEFAULT_GOAL := help
.PHONY: help deps generate build test test-privileged bench lint demo demo-down clean image

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install Debian packages and Go modules (scripts/deps.sh)
	bash scripts/deps.sh

generate: ## Regenerate pkg/datapath from bpf/ (clang-19) and pkg/api from its proto (protoc)
	$(GO) generate ./pkg/datapath/ ./pkg/api/

build: ## Build bin/hms-node and bin/hms-testapp
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/hms-node ./cmd/hms-node
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/hms-testapp ./internal/testapp/cmd/hms-testapp

test: ## Run the unprivileged tests
	env -u HMS_TEST_PRIVILEGED $(GO) test -count=1 ./...

test-privileged: ## Run all tests, privileged ones too (root, -p 1: they share the kernel)
	HMS_TEST_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m ./...

bench: ## Run the end-to-end benchmarks once each (root)
	HMS_TEST_PRIVILEGED=1 $(GO) test -run '^$$' -bench . -benchtime=1x -timeout 60m ./internal/e2e/

lint: ## go vet, and fail on files gofmt would change
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "not gofmt'ed:"; echo "$$out"; exit 1; fi

demo: ## Start the one-machine demo (scripts/demo.sh up)
	bash scripts/demo.sh up

demo-down: ## Remove everything the demo made (scripts/demo.sh down)
	bash scripts/demo.sh down

image: ## Build the OCI image localhost/hms-node:<version> (and :latest) from scratch with buildah (deploy/image/build.sh)
	VERSION=$(VERSION) COMMIT=$(COMMIT) GO=$(GO) bash deploy/image/build.sh

clean: ## Remove build outputs
	rm -rf bin
