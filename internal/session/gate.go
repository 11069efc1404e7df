package session

import (
	"context"
	"sync"
)

// WriteGate bounds the snapshot writes in flight on the hub across all
// clusters, and shares them fairly: while writes wait, the slots freed go
// round-robin to the clusters waiting, one at a time, so a cluster whose
// nodes churn takes every slot when it is alone and no more than its
// share when others want to write too. (The hub's API Priority and
// Fairness does the same between the operator and the hub's other
// clients; the gate does it between the operator's own clusters, which
// the hub sees as one flow.) A nil *WriteGate lets every write through.
type WriteGate struct {
	mu   sync.Mutex
	free int
	// waiting holds, per cluster, its writers waiting for a slot, oldest
	// first; turn lists the clusters with waiters, next to be served
	// first.
	waiting map[string][]chan struct{}
	turn    []string
}

// NewWriteGate returns a gate of slots writes in flight; slots ≤ 0 gives
// nil, which does not bound.
func NewWriteGate(slots int) *WriteGate {
	if slots <= 0 {
		return nil
	}
	return &WriteGate{free: slots, waiting: map[string][]chan struct{}{}}
}

// Acquire blocks until cluster may start one hub write or ctx ends; on
// success the caller must call Release when the write is done.
func (g *WriteGate) Acquire(ctx context.Context, cluster string) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	if g.free > 0 && len(g.turn) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	granted := make(chan struct{})
	if len(g.waiting[cluster]) == 0 {
		g.turn = append(g.turn, cluster)
	}
	g.waiting[cluster] = append(g.waiting[cluster], granted)
	g.mu.Unlock()

	select {
	case <-granted:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-granted:
		// Granted while giving up: hand the slot on.
		g.releaseLocked()
	default:
		g.dropLocked(cluster, granted)
	}
	return ctx.Err()
}

// Release ends a write that Acquire let start.
func (g *WriteGate) Release() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *WriteGate) releaseLocked() {
	if len(g.turn) == 0 {
		g.free++
		return
	}
	cluster := g.turn[0]
	q := g.waiting[cluster]
	close(q[0])
	q[0] = nil
	g.turn = g.turn[1:]
	if len(q) == 1 {
		delete(g.waiting, cluster)
		return
	}
	g.waiting[cluster] = q[1:]
	// Served: to the back of the line.
	g.turn = append(g.turn, cluster)
}

// dropLocked takes a waiter that gave up out of its cluster's line.
func (g *WriteGate) dropLocked(cluster string, granted chan struct{}) {
	q := g.waiting[cluster]
	for i, c := range q {
		if c == granted {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) > 0 {
		g.waiting[cluster] = q
		return
	}
	delete(g.waiting, cluster)
	for i, c := range g.turn {
		if c == cluster {
			g.turn = append(g.turn[:i:i], g.turn[i+1:]...)
			break
		}
	}
}
