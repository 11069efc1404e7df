// Package sidecar serves the hub's NodeSnapshots and ManagedClusters to many
// clients from one watch per kind: a websocket stream (docs/protocol.md),
// plain HTTP lists, and the web UI (internal/ui).
//
//   - hub.go: one Reflector per kind, writing straight into a fanout.Broker.
//   - auth.go: who is asking (TokenReview) and may they watch or list this
//     (SubjectAccessReview), both asked of the hub, each within its own
//     budget, and cached briefly.
//   - conn.go: one websocket connection: reader, writer, pinger, reviewer,
//     and how it is closed (with a code, behind whole messages).
//   - server.go: routes, limits (per IP, per user, per server), readiness,
//     the streamed HTTP reads and the metrics listener.
//   - metrics.go: what operators graph.
package sidecar
