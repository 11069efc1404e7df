// Package framework holds what the integration, e2e and benchmark suites
// share: real control planes (a hub with the CRDs, members without),
// kubeconfigs for them, a TCP proxy that can cut a member off, member Node
// fixtures, a stand-in kubelet that ends terminating pods, and a transport
// that counts hub requests.
package framework
