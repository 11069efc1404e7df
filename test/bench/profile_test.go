package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestProfileOperatorHeap is a development aid, run by hand:
// NODEMIRROR_PROFILE=/tmp/heap.pprof go test ./test/bench -run ProfileOperatorHeap
func TestProfileOperatorHeap(t *testing.T) {
	out := os.Getenv("NODEMIRROR_PROFILE")
	if out == "" {
		t.Skip("set NODEMIRROR_PROFILE to a file to write the operator's heap profile after mirroring 1,000 nodes")
	}
	sz := quick
	sz.Members, sz.ClustersPerMember, sz.NodesPerCluster = 1, 1, 1000
	ctx := context.Background()
	e, cleanup, err := setup(ctx, sz, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	res := &results{}
	if err := e.createNodes(ctx, res); err != nil {
		t.Fatal(err)
	}
	if err := e.initialMirror(ctx, res); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	resp, err := http.Get("http://" + e.operator.debug + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
	t.Logf("operator heap per node: %.0f B", res.Memory.OperatorBytesPerNode10k)
}

// TestProfileSidecarFanout is a development aid, run by hand:
// NODEMIRROR_PROFILE=/tmp/cpu.pprof go test ./test/bench -run ProfileSidecarFanout
func TestProfileSidecarFanout(t *testing.T) {
	out := os.Getenv("NODEMIRROR_PROFILE")
	if out == "" {
		t.Skip("set NODEMIRROR_PROFILE to a file to write the sidecar's CPU profile during a fan-out to 1,000 clients")
	}
	sz := quick
	sz.Members, sz.ClustersPerMember, sz.NodesPerCluster = 1, 1, 10
	sz.FanoutClients, sz.FanoutRate, sz.FanoutDuration, sz.FanoutObjects, sz.IdleClients = []int{1000}, 100, 8*time.Second, 100, 10
	ctx := context.Background()
	e, cleanup, err := setup(ctx, sz, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	done := make(chan error, 1)
	go func() {
		time.Sleep(12 * time.Second) // past connecting the clients
		resp, err := http.Get("http://" + e.sidecar.debug + "/debug/pprof/profile?seconds=4")
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		_, err = io.Copy(f, resp.Body)
		done <- err
	}()
	res := &results{}
	if err := e.fanout(ctx, res); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("fan-out: %+v", res.Fanout)
}
