// Package session mirrors one member cluster's nodes into NodeSnapshots on
// the hub. A Session's lifetime is a context: Start begins it, cancelling
// the context (or Stop) ends its informer, work queue, workers and health
// prober, and Stop waits until every goroutine has returned.
//
// Inside a session:
//
//	member API ──list+watch (nodeSelector)──▶ informer ──Transform──▶ store
//	                                             │ enqueue node name
//	                                             ▼
//	                                     typed work queue (coalesces bursts)
//	                                             │
//	                                             ▼
//	             worker: projection.Project → Digest == known? skip : write
//
// Files by job: session.go (lifecycle, informer and queue wiring, status
// roll-up), node.go (what the informer keeps of a node: the transform),
// writer.go (the hub side: seed, sync, what the hub holds per node),
// health.go (probing and classifying member answers), loops.go (the probe
// and notify loops), metrics.go.
//
// The writer knows, per node, the digest and resourceVersion of the snapshot
// the hub holds (seeded by one metadata-only list of the cluster's snapshots
// at start, keyed by the node-name annotation), so heartbeats,
// resourceVersion bumps and resyncs cost no hub request at all.
//
// The prober asks the member's /readyz (falling back to /healthz) and turns
// answers into the Connected condition with a failure threshold, so one lost
// probe does not flap it.
//
// A session is given a *rest.Config: turning a tenant's kubeconfig into one
// is package member's job.
package session
