# nodemirror — build, generate and test.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

CONTROLLER_TOOLS_VERSION ?= v0.23.0
GINKGO_VERSION ?= v2.34.0
LOCALBIN := $(CURDIR)/bin
CONTROLLER_GEN := $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GO_TEST_FLAGS ?= -count=1 -timeout 30m

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*##/ { printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs and RBAC under config/.
	$(CONTROLLER_GEN) crd rbac:roleName=nodemirror-operator paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: lint
lint: ## go vet, and gofmt must have nothing to say.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files are not committed.
	@git diff --exit-code -- api config || { echo "generated files are stale: run make generate manifests"; exit 1; }

##@ Build

.PHONY: build
build: ## Build the binaries into bin/.
	go build -o $(LOCALBIN)/nodemirror-operator ./cmd/operator
	go build -o $(LOCALBIN)/nodemirror-sidecar ./cmd/sidecar

##@ Run

DEMO_NODES ?= 30
.PHONY: demo
demo: testbin ## Run a hub, two simulated members, the operator and the sidecar with its UI (Ctrl-C stops all).
	go run ./hack/demo --nodes $(DEMO_NODES)

##@ Benchmarks

.PHONY: bench
bench: testbin ## Measure against baselines on real API servers; writes bench/results-<date>.{md,json} and the README summary.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/testbin go run ./test/bench

##@ Test

.PHONY: testbin
testbin: ## Build etcd, kube-apiserver and kubectl from module sources (cached per version).
	./hack/testbin.sh >/dev/null

.PHONY: chromium
chromium: ## Make sure Debian's Chromium is there for the browser test (installs it as root).
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the browser test"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "the browser test needs Chromium: apt-get install chromium (or set CHROMIUM=/path/to/chrome)"; exit 1; \
		fi; }

.PHONY: test
test: testbin chromium lint ## Unit, envtest integration, e2e, demo and browser tests against real API servers.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/testbin go test $(GO_TEST_FLAGS) ./...

$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@
