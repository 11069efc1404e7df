// Package projection turns a member cluster's Node into the state a
// NodeSnapshot mirrors, and nothing more: labels and annotations through the
// cluster's mirror filter, taints, conditions without heartbeat times,
// addresses, resources, node info, roles, and the cells kubectl prints. It
// is pure, so the operator's session, its tests and the benchmarks share
// one definition of "what changed".
//
//   - Filter decides which label and annotation keys are mirrored.
//   - Project builds the NodeSnapshotStatus; Digest hashes it without the
//     source resourceVersion, so heartbeats and resyncs hash the same.
//   - Columns are the node's `kubectl get nodes -o wide` cells, by kubectl's rules.
//   - SnapshotName maps <cluster, node> to a NodeSnapshot name.
package projection
