package session

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWriteGateBoundsInFlight: many writers of several clusters never have
// more writes in flight than the gate's slots, and all get through.
func TestWriteGateBoundsInFlight(t *testing.T) {
	g := NewWriteGate(3)
	var inFlight, most, done atomic.Int32
	var wg sync.WaitGroup
	for c := range 4 {
		for range 25 {
			wg.Go(func() {
				if err := g.Acquire(t.Context(), string(rune('a'+c))); err != nil {
					t.Error(err)
					return
				}
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(time.Millisecond)
				inFlight.Add(-1)
				done.Add(1)
				g.Release()
			})
		}
	}
	wg.Wait()
	if most.Load() > 3 || done.Load() != 100 {
		t.Fatalf("most in flight %d (slots 3), done %d of 100", most.Load(), done.Load())
	}
}

// TestWriteGateTakesTurns: a cluster that queued many writes does not make
// a cluster that comes later wait behind all of them.
func TestWriteGateTakesTurns(t *testing.T) {
	g := NewWriteGate(1)
	if err := g.Acquire(t.Context(), "busy"); err != nil {
		t.Fatal(err)
	}
	var order []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := func(cluster string) {
		queued := make(chan struct{})
		wg.Go(func() {
			go func() { time.Sleep(10 * time.Millisecond); close(queued) }()
			if err := g.Acquire(t.Context(), cluster); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, cluster)
			mu.Unlock()
			g.Release()
		})
		<-queued
	}
	for range 5 {
		start("busy")
	}
	start("quiet")
	g.Release()
	wg.Wait()
	// The quiet cluster's one write goes second: right after the busy
	// cluster's first, not after all five.
	if len(order) != 6 || order[1] != "quiet" {
		t.Fatalf("grant order %v, want quiet second", order)
	}
}

// TestWriteGateGiveUp: a writer whose context ends stops waiting, and its
// place (or a slot granted as it gave up) is not lost.
func TestWriteGateGiveUp(t *testing.T) {
	g := NewWriteGate(1)
	if err := g.Acquire(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := g.Acquire(ctx, "b"); err == nil {
		t.Fatal("Acquire with a full gate and an ended context succeeded")
	}
	g.Release()
	ctx, cancel = context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := g.Acquire(ctx, "c"); err != nil {
		t.Fatalf("the slot released after a writer gave up is lost: %v", err)
	}
	if g := NewWriteGate(0); g != nil || g.Acquire(t.Context(), "x") != nil {
		t.Fatal("a gate of no slots must be nil and let everything through")
	}
}
