package framework

import "github.com/nodemirror/nodemirror/internal/dev/simulator"

// Member node fixtures, shared with the demo's node simulator.
var (
	NewNode    = simulator.NewNode
	CreateNode = simulator.CreateNode
	Heartbeat  = simulator.Heartbeat
	SetReady   = simulator.SetReady
	PatchLabel = simulator.PatchLabel
)
