// Package controlplane runs real Kubernetes control planes on loopback
// (etcd and kube-apiserver through envtest, built from module sources by
// hack/testbin.sh): a hub with the nodemirror CRDs and plain members, with
// kubeconfigs for them. It is development tooling: the demo, the tests and
// the benchmarks run on it; the operator and the sidecar never import it.
package controlplane
