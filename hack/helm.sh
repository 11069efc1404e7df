#!/usr/bin/env bash
# Builds the Helm CLI pinned in hack/helm/go.mod from the Go module proxy
# into the user cache dir, keyed by version (a fresh clone on the same machine
# reuses it), and links it as bin/helm. Prints the path of the binary.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=$(cd "$root/hack/helm" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
# Helm's default Kubernetes version for template and lint is its client-go's,
# stamped at build as Helm's own Makefile does.
kube=$(cd "$root/hack/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
kube_minor=${kube#v0.}; kube_minor=${kube_minor%%.*}
key="helm-${version}-k8s1.${kube_minor}-$(go env GOOS)-$(go env GOARCH)"
cache="${NODEMIRROR_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodemirror/tools}/$key"
link="$root/bin/helm"

if [[ ! -x "$cache/helm" ]]; then
	echo "building $key into $cache (first time only, a few minutes)" >&2
	tmp="$cache.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	cd "$root/hack/helm"
	ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${version}"
	for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${kube_minor}"
	done
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
	rm -rf "$cache"
	mv "$tmp" "$cache"
	trap - EXIT
fi

mkdir -p "$root/bin"
ln -sfn "$cache/helm" "$link"
echo "$link"
