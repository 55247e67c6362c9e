# Mizzen: the developer's entry points. `make help` lists them.
SHELL := /usr/bin/env bash
VERSION ?= 0.1.0
IMG ?= ghcr.io/mizzen-mesh/mizzen:$(VERSION)
GOTEST_FLAGS ?=

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: run
run: ## Run the operator against a local control plane and install the demo profile (Ctrl-C stops everything).
	hack/setup-kube.sh >/dev/null
	go build -o bin/manager .
	go build -o bin/localrun ./hack/localrun
	bin/localrun --operator bin/manager --sample config/samples/install_v1alpha1_meshinstall_demo.yaml

.PHONY: test
test: setup verify ## Run every test: generated files up to date, unit, chart, and integration tests on a real control plane.
	go test $(GOTEST_FLAGS) -count=1 -timeout 40m ./...

.PHONY: setup
setup: ## Build the local control plane's binaries and the code generators into ~/.cache/mizzen (once).
	hack/setup-kube.sh >/dev/null
	hack/setup-tools.sh >/dev/null
	hack/check-project.sh >/dev/null

.PHONY: generate
generate: ## Regenerate deepcopy, CRDs, RBAC and the Istio CRDs of charts/base.
	hack/generate.sh

.PHONY: bundle
bundle: ## Regenerate the OLM bundle for OperatorHub (bundle/, bundle.Dockerfile) from config/, the samples and the charts.
	go run ./hack/gen-bundle

.PHONY: verify
verify: ## Fail when generated files are stale, code is not gofmt'ed, or go vet complains.
	hack/generate.sh --check
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	go vet ./...

.PHONY: build
build: ## Build static binaries of the operator and every cmd/ into bin/.
	VERSION=$(VERSION) hack/build-binaries.sh bin

.PHONY: render
render: ## Print what the demo profile installs.
	go run . render --profile demo

.PHONY: bench
bench: setup ## Benchmarks: install time, no-op reconcile, operator memory (local control plane), injection latency.
	go test -run '^$$' -bench InstallDemo -benchtime 5x -count 1 ./test/bench/
	go test -run '^$$' -bench NoopReconcile -benchtime 200x -count 1 ./test/bench/
	go test -run '^$$' -bench Injection -benchtime 3s -count 1 ./internal/inject/

.PHONY: bench-pilot
bench-pilot: setup ## Control plane at scale: 1000 services, 2000 xDS clients in another process, one VirtualService change.
	go test -tags bench -count=1 -v -timeout 60m -run TestPilotScale ./test/pilotbench/

.PHONY: bench-dataplane
bench-dataplane: setup ## Data plane: fortio through 2 Mizzen sidecars (mTLS) vs the same chain in nginx and haproxy, vs direct.
	BIN=$$(hack/setup-bench.sh | tail -1) && MIZZEN_PERF=1 MIZZEN_BENCH_BIN=$$BIN go test -count=1 -v -timeout 30m -run DataplanePerf ./test/perf/

.PHONY: pgo-proxy
pgo-proxy: setup ## Refresh cmd/proxy/default.pgo (profile-guided optimization) from both sidecars' CPU profiles under the data-plane benchmark.
	D=$$(mktemp -d) && BIN=$$(hack/setup-bench.sh | tail -1) && \
	MIZZEN_PERF=1 MIZZEN_BENCH_BIN=$$BIN MIZZEN_PERF_DURATION=40s MIZZEN_PERF_PROFILE=$$D go test -count=1 -timeout 30m -run DataplanePerf ./test/perf/ && \
	go tool pprof -proto $$D/client.pprof $$D/echo.pprof > cmd/proxy/default.pgo && rm -rf $$D

.PHONY: docker-build
docker-build: ## Build the one image holding every binary (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: docker-push
docker-push: ## Push the image.
	docker push $(IMG)
