// Package sidecar serves the hub's NodeSnapshots and ManagedClusters to many
// clients from one watch per kind: a websocket stream (docs/protocol.md),
// plain HTTP lists, and the web UI (internal/ui).
//
//   - hub.go: one Reflector per kind, writing straight into a fanout.Broker.
//   - auth.go: who is asking (TokenReview) and may they list this
//     (SubjectAccessReview), both asked of the hub and cached briefly.
//   - conn.go: one websocket connection: reader, writer, pinger.
//   - server.go: routes, limits, readiness and the HTTP reads.
//   - metrics.go: what operators graph.
package sidecar
