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
// The writer knows, per node, the digest and resourceVersion of the snapshot
// it last wrote (seeded by one list of the cluster's snapshots at start), so
// heartbeats, resourceVersion bumps and resyncs cost no hub request at all.
//
// The prober asks the member's /readyz (falling back to /healthz) and turns
// answers into the Connected condition with a failure threshold, so one lost
// probe does not flap it.
package session
