// Package nodeoperation reconciles NodeOperations: it resolves an
// operation's clusters and nodes from the hub's ManagedClusters and
// mirrored NodeSnapshots of the operation's own namespace, acts on each
// node through its cluster's member access (the managedcluster
// Reconciler's running session, so the operator's member Policy applies),
// at most spec.maxConcurrent nodes of a cluster at once, and reports
// bounded, batched status.
//
// All progress can be recomputed from the member and the status: every
// action is idempotent (a node already cordoned, a label already there, a
// taint already gone is success without a write), a drain re-lists the
// node's pods and evicts what is left, and results already terminal are
// not redone. A restarted operator therefore resumes an operation where
// the last status write left it.
package nodeoperation
