// Package cluster runs a real Kubernetes cluster on this machine for the
// tests that need what only real parts decide: a kubelet that runs pods in a
// container runtime, ends them after their grace period and heartbeats;
// a scheduler; a controller manager with every default controller (node
// lifecycle, disruption, ReplicaSet, Deployment, DaemonSet, EndpointSlice,
// ServiceAccount tokens, garbage collector); kube-proxy, so that pods reach
// the API server through the kubernetes Service and each other through
// Services.
//
// Everything runs from binaries built from module sources by
// hack/testbin.sh --cluster, as root, with its own state under one temporary
// directory: etcd's data, certificates, containerd's root, state and socket,
// the kubelet's root dir, CNI configuration, logs. Host-wide state it needs
// is named for the cluster and removed at Stop: a bridge per node (nmbr0,
// nmbr1, …) that holds its pods and its address (nmbr0 the API server's
// too), the service range routed onto nmbr0 so that a service address
// without endpoints goes nowhere, an iptables chain that keeps pod traffic
// on the bridges, cgroups under their own root. Stop leaves no process, mount, link, iptables rule
// or cgroup behind, and Leftovers says what a run did leave.
//
// Files:
//   - cluster.go: Start, Stop, the control plane (etcd, kube-apiserver,
//     kube-controller-manager, kube-scheduler)
//   - node.go: a node (containerd, kubelet, kube-proxy) and its configs
//   - network.go: the bridge, the service route and the isolation chain
//   - images.go: the pause image and image import into a node's runtime
//   - teardown.go: Stop's cleanup, the removal of what a killed run left,
//     and the leftover check
//   - pki.go: the cluster CA and certificates
//   - process.go: components as child processes
//   - pause/: the pods' sandbox process
package cluster
