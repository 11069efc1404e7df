#!/usr/bin/env bash
# Builds the control-plane binaries (etcd, kube-apiserver, kubectl) that tests
# and the demo run, from the sources pinned in hack/tools/go.mod, and links
# them into bin/testbin. The build (about 12 minutes cold on 2 cores) lands in
# the user cache dir keyed by version, so a fresh clone on the same machine
# reuses it, the way setup-envtest caches its downloads.
#
# Prints the directory to use as KUBEBUILDER_ASSETS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
kube_version=v1.37.2
etcd_version=v3.7.0
key="k8s-${kube_version}-etcd-${etcd_version}-$(go env GOOS)-$(go env GOARCH)"
cache="${NODEMIRROR_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodemirror/testbin}/$key"
link="$root/bin/testbin"

if [[ ! -x "$cache/kube-apiserver" || ! -x "$cache/etcd" || ! -x "$cache/kubectl" ]]; then
	echo "building control-plane binaries $key into $cache (first time only, ~12 min)" >&2
	tmp="$cache.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	major=${kube_version#v}; major=${major%%.*}
	minor=${kube_version#v*.}; minor=${minor%%.*}
	ldflags="-s -w"
	ldflags+=" -X k8s.io/component-base/version.gitVersion=${kube_version}"
	ldflags+=" -X k8s.io/component-base/version.gitMajor=${major}"
	ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
	ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
	ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
	cd "$root/hack/tools"
	export CGO_ENABLED=0
	go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
	go build -trimpath -ldflags "$ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
	go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
	rm -rf "$cache"
	mv "$tmp" "$cache"
	trap - EXIT
fi

mkdir -p "$root/bin"
ln -sfn "$cache" "$link"
echo "$link"
