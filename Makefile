# Herald's developer entry points. `make help` lists them.

SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
STAMPS := $(BIN)/.versions
export PATH := $(BIN):$(PATH)

# Pinned tool versions: `make tools` installs exactly these with `go install`, so generated code
# and lint results are reproducible.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION := v2.34.0
STATICCHECK_VERSION := v0.8.2
GRPCURL_VERSION := v1.9.4

# Every Go module of the workspace.
MODULES := . ./proto ./internal ./services/notifier ./services/workers ./services/contacts ./deploy
# Modules kept out of the workspace because their dependencies would raise the versions the
# services build with (deploy/monitoring needs the whole of Prometheus for its PromQL parser,
# proto/bufcheck buf's plugin library).
STANDALONE := ./deploy/monitoring ./proto/bufcheck

# The protoc plugins behind `make proto`.
PROTO_PLUGINS := $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2
# Herald's own buf check plugin (proto/bufcheck), named in proto/buf.yaml: buf lint and buf
# breaking fail without it, buf generate does not need it.
BUF_PLUGIN := $(BIN)/buf-plugin-herald

.PHONY: help run test modules bench chaos fuzz proto breaking lint fmt vet tools build clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

run: ## Start the whole system on this machine (embedded NATS, private PostgreSQL, simulator).
	$(GO) run ./cmd/herald-dev

# proto's tests regenerate the API with the pinned buf and plugins (not buf-plugin-herald, which
# buf generate does not run) and compare the result with the committed code.
test: $(BIN)/buf $(PROTO_PLUGINS) ## Run every module's tests against real PostgreSQL and JetStream.
	$(GO) test -count=1 $(addsuffix /...,$(MODULES))
	for m in $(STANDALONE); do (cd $$m && GOWORK=off $(GO) test -count=1 ./...) || exit 1; done

# Each module also builds on its own, without go.work, as it does for whoever checks out or vendors
# one alone. A module that requires another Herald module names it at v0.0.0 and points at its
# directory with a `replace` in its go.mod: the same directories go.work uses, so the workspace
# and a lone module build the same code. (The replaces count only where the module is the main
# one: a build outside this repository would need tagged versions.) Each go.mod and go.sum is
# what `go mod tidy` makes of it with GOWORK=off; the workspace picks the highest version any
# module asks for, and go.work.sum holds the checksums only the workspace needs.
modules: ## Check that every module builds, vets and is tidy on its own (GOWORK=off).
	@for m in $(MODULES) $(STANDALONE); do \
	  echo "$$m"; \
	  (cd $$m && GOWORK=off $(GO) build ./... && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) mod tidy -diff) || \
	    { echo "module $$m does not build, vet or stay tidy on its own: fix it, or run 'cd $$m && GOWORK=off go mod tidy'" >&2; exit 1; }; \
	done

# The end-to-end benchmark's arguments: `make bench BENCH_ARGS='--mode rate --rate 5000'`. The
# standard run measures unary Send (against the notifier and a no-op server) and then sustained
# SendBatch on one stack, and prints a summary line for each, the batch line last.
BENCH_ARGS ?= --mode standard -c 64 --unary-duration 20s --batch-callers 8 --batch-size 100 --batch-duration 60s --provider-latency 0ms

bench: ## Run the micro-benchmarks, then the end-to-end one (cmd/herald-bench; BENCH_ARGS for other modes).
	$(GO) test -run='^$$' -bench=. -benchmem $(addsuffix /...,$(MODULES))
	$(GO) run ./cmd/herald-bench $(BENCH_ARGS)

# The fault suite's arguments: `make chaos CHAOS_ARGS='--soak 10m'` cycles the faults for 10 minutes.
CHAOS_ARGS ?=

chaos: ## Run the fault suite (cmd/herald-chaos): kills, restarts and provider faults under load; CHAOS_ARGS='--soak 10m' for a soak.
	$(GO) run ./cmd/herald-chaos $(CHAOS_ARGS)

build: ## Build every binary into ./bin.
	$(GO) build -o $(BIN)/ ./cmd/... ./services/notifier/cmd/... ./services/workers/cmd/... ./services/contacts/cmd/...

proto: $(BIN)/buf $(PROTO_PLUGINS) $(BUF_PLUGIN) ## Lint the API and regenerate proto/gen and proto/openapi.
	cd proto && buf lint && rm -rf gen openapi/herald.swagger.json && buf generate --path herald

breaking: $(BIN)/buf $(BUF_PLUGIN) ## Check the API for breaking changes against the main branch.
	cd proto && buf breaking --against '../.git#branch=main,subdir=proto'

lint: $(BIN)/staticcheck $(BIN)/buf $(BUF_PLUGIN) vet ## gofmt, go vet, staticcheck and buf lint.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	staticcheck $(addsuffix /...,$(MODULES))
	for m in $(STANDALONE); do (cd $$m && GOWORK=off staticcheck ./...) || exit 1; done
	cd proto && buf lint

vet: ## go vet every module.
	$(GO) vet $(addsuffix /...,$(MODULES))
	for m in $(STANDALONE); do (cd $$m && GOWORK=off $(GO) vet ./...) || exit 1; done

# How long `make fuzz` runs each fuzz target: `FUZZTIME=5s make fuzz`.
FUZZTIME ?= 60s

fuzz: ## Run every module's fuzz targets, FUZZTIME (60s) each, two at a time.
	FUZZTIME=$(FUZZTIME) scripts/fuzz $(MODULES) -- $(STANDALONE)

fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

tools: $(BIN)/buf $(PROTO_PLUGINS) $(BUF_PLUGIN) $(BIN)/staticcheck $(BIN)/grpcurl ## Install the pinned tools into ./bin.

$(BIN)/buf: $(STAMPS)/buf@$(BUF_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go: $(STAMPS)/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc: $(STAMPS)/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/protoc-gen-grpc-gateway: $(STAMPS)/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
$(BIN)/protoc-gen-openapiv2: $(STAMPS)/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
$(BIN)/staticcheck: $(STAMPS)/staticcheck@$(STATICCHECK_VERSION)
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(BIN)/grpcurl: $(STAMPS)/grpcurl@$(GRPCURL_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
# Each tool depends on a stamp named after its pinned version, so a changed pin installs that
# tool again. Making a stamp removes the tool's other stamps, so going back to a version installs
# it again too.
$(STAMPS)/%:
	@mkdir -p $(@D) && rm -f $(@D)/$(firstword $(subst @, ,$*))@* && touch $@
# Built from this checkout, not installed at a version, and rebuilt when its source changes, so a
# rule edited on a branch is the rule that branch checks with.
$(BUF_PLUGIN): $(shell find proto/bufcheck -name '*.go' -not -name '*_test.go') proto/bufcheck/go.mod proto/bufcheck/go.sum
	cd proto/bufcheck && GOWORK=off $(GO) build -o $@ ./cmd/buf-plugin-herald

clean: ## Remove built binaries (not ./.herald, which holds make run's data).
	rm -rf $(BIN)
