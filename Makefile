# nodemirror — build, generate and test.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

CONTROLLER_TOOLS_VERSION ?= v0.23.0
GINKGO_VERSION ?= v2.34.0
LOCALBIN := $(CURDIR)/bin
CONTROLLER_GEN := $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GO_TEST_FLAGS ?= -count=1 -timeout 30m

# Release: what the binaries are stamped with and what the images are called.
ifeq ($(origin VERSION), undefined)
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
endif
ifeq ($(origin COMMIT), undefined)
COMMIT := $(shell git rev-parse HEAD 2>/dev/null)
endif
REGISTRY ?= ghcr.io/nodemirror
IMG ?= $(REGISTRY)/nodemirror-operator:$(VERSION)
SIDECAR_IMG ?= $(REGISTRY)/nodemirror-sidecar:$(VERSION)
DIST ?= dist
KUBECTL ?= kubectl
VERSION_PKG := github.com/nodemirror/nodemirror/internal/version
LDFLAGS := -X $(VERSION_PKG).Version=$(VERSION) -X $(VERSION_PKG).Commit=$(shell c='$(COMMIT)'; echo "$${c:0:7}")
RELEASE := go run ./hack/release

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
	rm -f charts/nodemirror/crds/*.yaml && cp config/crd/bases/*.yaml charts/nodemirror/crds/

.PHONY: lint
lint: ## go vet, and gofmt must have nothing to say.
	go vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files are not committed.
	@git diff --exit-code -- api config charts || { echo "generated files are stale: run make generate manifests"; exit 1; }

##@ Build

.PHONY: build
build: ## Build the binaries into bin/, stamped with VERSION and COMMIT (--version).
	go build -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/nodemirror-operator ./cmd/operator
	go build -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/nodemirror-sidecar ./cmd/sidecar
	go build -ldflags "$(LDFLAGS)" -o $(LOCALBIN)/kubectl-nodemirror ./cmd/nodemirror

##@ Release

.PHONY: images
images: ## Build the OCI images IMG and SIDECAR_IMG (linux/amd64, linux/arm64) without Docker into dist/images/, listed in dist/images.json.
	$(RELEASE) images --version $(VERSION) --commit "$(COMMIT)" --image operator=$(IMG) --image sidecar=$(SIDECAR_IMG) --out $(DIST)

.PHONY: build-installer
build-installer: ## Render config/default into dist/install.yaml: images by digest from dist/images.json if there is one, else IMG and SIDECAR_IMG by tag.
	$(RELEASE) installer --kustomize config/default --out $(DIST)/install.yaml \
		$(if $(wildcard $(DIST)/images.json),--images $(DIST)/images.json,--version $(VERSION) --image operator=$(IMG) --image sidecar=$(SIDECAR_IMG))

.PHONY: release
release: images ## Build the images and dist/install.yaml with both images pinned by digest (make release VERSION=v0.1.0).
	$(RELEASE) installer --kustomize config/default --out $(DIST)/install.yaml --images $(DIST)/images.json

.PHONY: deploy
deploy: ## Apply dist/install.yaml to the cluster of the current kubeconfig (KUBECTL=kubectl).
	$(KUBECTL) apply --server-side -f $(DIST)/install.yaml

.PHONY: undeploy
undeploy: ## Delete what dist/install.yaml installed.
	$(KUBECTL) delete --ignore-not-found -f $(DIST)/install.yaml

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

.PHONY: helm
helm: ## Build the Helm CLI pinned in hack/helm from module sources (cached per version) into bin/helm.
	./hack/helm.sh >/dev/null

.PHONY: testbin-cluster
testbin-cluster: ## Build the real test cluster's binaries too: kubelet, controller manager, scheduler, kube-proxy, containerd, crictl, CNI plugins (cached per version).
	./hack/testbin.sh --cluster >/dev/null

.PHONY: cluster-deps
cluster-deps: ## As root: the real test cluster's binaries, and Debian's runc and iptables when missing. Without root: says the suite will skip.
	@if [ "$$(id -u)" = 0 ]; then \
		$(MAKE) --no-print-directory testbin-cluster; \
		missing=""; for p in runc iptables; do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing Debian's$$missing for the real-cluster suite"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		fi; \
	else \
		echo "not root: the real-cluster suite (test/realcluster) will skip; run it with: sudo make test-cluster"; \
	fi

# The real-cluster suites run after the others, one package at a time (-p 1):
# each is a whole cluster on the machine's two cores with host-wide names,
# and their timings compare with kubectl's.
REAL_CLUSTER_PKG := ./test/cluster ./test/realcluster

.PHONY: test
test: testbin helm chromium lint cluster-deps ## Unit, envtest integration, e2e, demo and browser tests against real API servers, then the real-cluster suite.
	KUBEBUILDER_ASSETS=$(LOCALBIN)/testbin go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v -e '/test/realcluster$$' -e '/test/cluster$$')
	go test $(GO_TEST_FLAGS) -p 1 -v $(REAL_CLUSTER_PKG)

.PHONY: test-cluster
test-cluster: testbin helm chromium cluster-deps ## Only the real-cluster suite (as root): the release installed on a real cluster, real nodes mirrored, drains.
	NODEMIRROR_REAL_CLUSTER=required go test $(GO_TEST_FLAGS) -p 1 -v $(REAL_CLUSTER_PKG)

$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/controller-gen $@
