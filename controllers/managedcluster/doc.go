// Package managedcluster reconciles ManagedClusters into sessions (see
// internal/session): one per cluster, started, restarted when its spec or
// credentials change, paused and stopped with the resource, and reflected
// back into the ManagedCluster's status.
//
//   - controller.go: Reconcile (get → finalizer → work → deferred status patch)
//     and the watches: ManagedClusters, Secret metadata, session changes.
//   - kubeconfig.go: reading the Secret into a member rest.Config.
//   - sessions.go: the running sessions, keyed by ManagedCluster.
//   - status.go: every owned condition computed in one place, and Events.
package managedcluster
