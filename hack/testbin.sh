#!/usr/bin/env bash
# Builds the binaries that tests and the demo run, from the sources pinned in
# hack/tools/go.mod (Kubernetes, etcd), hack/noderuntime/go.mod (containerd,
# CNI plugins) and hack/crictl/go.mod (crictl, whose CRI API is newer than the
# one containerd builds with), and links them into bin/testbin and
# bin/noderuntime.
# Nothing is downloaded from release pages. Each binary lands in the user
# cache dir keyed by version, so a fresh clone on the same machine reuses it,
# the way setup-envtest caches its downloads; a binary already there is not
# built again.
#
#   hack/testbin.sh            etcd, kube-apiserver, kubectl (envtest; ~12 min cold)
#   hack/testbin.sh --cluster  also kubelet, kube-controller-manager,
#                              kube-scheduler, kube-proxy, containerd, its runc
#                              shim, ctr, crictl and the CNI plugins (~10 min more)
#
# Prints the directory to use as KUBEBUILDER_ASSETS.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
kube_version=v1.37.2
etcd_version=v3.7.0
containerd_version=v2.3.7
cni_version=v1.9.1
crictl_version=v1.37.0
platform="$(go env GOOS)-$(go env GOARCH)"
cache_root="${NODEMIRROR_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodemirror/testbin}"
cache="$cache_root/k8s-${kube_version}-etcd-${etcd_version}-${platform}"
runtime_cache="$cache_root/containerd-${containerd_version}-cni-${cni_version}-crictl-${crictl_version}-${platform}"

cluster=false
case "${1:-}" in
"") ;;
--cluster) cluster=true ;;
*) echo "usage: $0 [--cluster]" >&2; exit 2 ;;
esac

major=${kube_version#v}; major=${major%%.*}
minor=${kube_version#v*.}; minor=${minor%%.*}
kube_ldflags="-s -w"
kube_ldflags+=" -X k8s.io/component-base/version.gitVersion=${kube_version}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=${major}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
kube_ldflags+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
containerd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${containerd_version}"

# build DIR MODULE_DIR NAME PACKAGE [LDFLAGS [TAGS]]: builds PACKAGE into
# DIR/NAME unless it is there; a half-built binary never takes its place.
build() {
	local dir=$1 module=$2 name=$3 pkg=$4 ldflags=${5:--s -w} tags=${6:-}
	[[ -x "$dir/$name" ]] && return 0
	echo "building $name into $dir (first time only)" >&2
	mkdir -p "$dir"
	local tmp="$dir/.$name.tmp.$$"
	(cd "$root/$module" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$tmp" "$pkg")
	mv "$tmp" "$dir/$name"
}

build "$cache" hack/tools kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build "$cache" hack/tools kubectl k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
build "$cache" hack/tools etcd go.etcd.io/etcd/server/v3
mkdir -p "$root/bin"
ln -sfn "$cache" "$root/bin/testbin"

if $cluster; then
	for cmd in kubelet kube-controller-manager kube-scheduler kube-proxy; do
		build "$cache" hack/tools "$cmd" "k8s.io/kubernetes/cmd/$cmd" "$kube_ldflags"
	done
	# No btrfs, no devmapper: the node's snapshotter is overlayfs, and both
	# would need cgo and their C headers.
	for cmd in containerd containerd-shim-runc-v2 ctr; do
		build "$runtime_cache" hack/noderuntime "$cmd" "github.com/containerd/containerd/v2/cmd/$cmd" "$containerd_ldflags" "no_btrfs no_devmapper"
	done
	build "$runtime_cache" hack/crictl crictl sigs.k8s.io/cri-tools/cmd/crictl "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${crictl_version}"
	mkdir -p "$runtime_cache/cni"
	for plugin in main/bridge main/loopback ipam/host-local meta/portmap; do
		build "$runtime_cache/cni" hack/noderuntime "${plugin#*/}" "github.com/containernetworking/plugins/plugins/$plugin" "-s -w"
	done
	ln -sfn "$runtime_cache" "$root/bin/noderuntime"
fi

echo "$root/bin/testbin"
