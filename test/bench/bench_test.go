package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestQuickBench runs every scenario at a small size as a correctness
// check: no timing is asserted, only what must hold at any speed.
func TestQuickBench(t *testing.T) {
	res, err := run(context.Background(), quick, options{}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if res.WriteAmp.Heartbeats == 0 || res.WriteAmp.HeartbeatWrites != 0 {
		t.Errorf("heartbeats: %d sent, %d hub writes, want some and 0", res.WriteAmp.Heartbeats, res.WriteAmp.HeartbeatWrites)
	}
	if res.WriteAmp.ChangeWrites == 0 || res.WriteAmp.WritesPerChange > 1 {
		t.Errorf("meaningful changes: %d writes for %d changes", res.WriteAmp.ChangeWrites, res.WriteAmp.Changes)
	}
	for _, l := range res.Latency {
		if l.Floor.N == 0 || l.Client.N == 0 || l.TargetRate > 0 && l.HubFloor.N == 0 {
			t.Errorf("latency at %d/s: %d at the floor, %d at the client, %d straight to the hub", l.TargetRate, l.Floor.N, l.Client.N, l.HubFloor.N)
		}
		if l.CPU.MachineBusy <= 0 || l.CPU.MachineBusy > 1 || l.CPU.HubAPIServer <= 0 {
			t.Errorf("latency at %d/s: CPU %+v", l.TargetRate, l.CPU)
		}
	}
	if res.Mirror.SnapshotsPerSecond <= 0 || res.Mirror.ListsPerCluster > 1 || res.Mirror.WatchesPerCluster > 1 {
		t.Errorf("initial mirror: %+v", res.Mirror)
	}
	if m := res.Mirror; m.RawCPU.HubCPUSeconds <= 0 || m.OperatorCPU.HubCPUSeconds <= 0 || m.OperatorCPU.OperatorCPUSec <= 0 || m.OperatorCPU.MachineBusy <= 0 {
		t.Errorf("initial mirror CPU: raw %+v, operator %+v", m.RawCPU, m.OperatorCPU)
	}
	for _, f := range res.Fanout {
		if f.Deliveries != f.Expected {
			t.Errorf("fan-out to %d clients: %d of %d delivered", f.Clients, f.Deliveries, f.Expected)
		}
	}
	if f := res.FanoutWriteFloor; f == nil || f.MicrosPerWrite <= 0 || f.MessageBytes == 0 {
		t.Errorf("write floor: %+v", f)
	}
	if res.FanoutWatch["nodesnapshots"] != 1 || res.FanoutWatch["managedclusters"] != 1 {
		t.Errorf("sidecar hub watches: %v, want one per kind", res.FanoutWatch)
	}
	if len(res.Reads) != 2 || res.Memory.SnapshotJSONMedian == 0 || res.Memory.NodeJSONMedian <= res.Memory.SnapshotJSONMedian {
		t.Errorf("reads %d, sizes %+v", len(res.Reads), res.Memory)
	}
	if o := res.Operations; o == nil || o.Succeeded != int32(o.Nodes) || o.Failed != 0 || o.OperationSeconds <= 0 || o.DirectSeconds <= 0 {
		t.Errorf("node operations: %+v", o)
	}
	total := quick.Members * quick.ClustersPerMember * quick.NodesPerCluster
	if len(res.Replicas) != 2 {
		t.Errorf("replica rounds: %+v", res.Replicas)
	} else {
		for _, r := range res.Replicas {
			// Every snapshot written once, by one replica (conflicts on a
			// first write would show as more).
			if r.HubWrites < total || r.HubWrites > total+total/10 || len(r.WritesPerReplica) != r.Replicas {
				t.Errorf("%d replicas: %d hub writes for %d snapshots (%v)", r.Replicas, r.HubWrites, total, r.WritesPerReplica)
			}
		}
	}
	if err := writeResults(res, t.TempDir(), false); err != nil {
		t.Fatal(err)
	}
}

// TestQuickHubCost runs the opt-in hubcost scenario at a small size: every
// point measured, every list complete, every figure read.
func TestQuickHubCost(t *testing.T) {
	res, err := run(context.Background(), quick, options{only: []string{"hubcost"}}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	hc := res.HubCost
	if hc == nil || len(hc.Points) != 1+len(quick.HubCostSnapshots) {
		t.Fatalf("hub cost: %+v", hc)
	}
	for _, p := range hc.Points {
		if p.APIServerRSS == 0 || p.APIServerHeapInuse == 0 || p.EtcdDBSize == 0 || p.EtcdRSS == 0 || (p.Snapshots > 0 && len(p.Lists) != 5) {
			t.Errorf("at %d snapshots: %+v", p.Snapshots, p)
		}
	}
	if hc.SnapshotJSON == 0 || hc.ManagedFieldsJSON == 0 || hc.Update.Snapshots != quick.HubCostUpdates || hc.Update.EtcdRevisons < float64(quick.HubCostUpdates) {
		t.Errorf("sizes %d/%d, update %+v", hc.SnapshotJSON, hc.ManagedFieldsJSON, hc.Update)
	}
	if !strings.Contains(markdown(res), "## Hub cost") || !strings.Contains(summary(res, ""), "hub cost per 10,000 snapshots") {
		t.Errorf("results file:\n%s", markdown(res))
	}
}

func TestSelectSteps(t *testing.T) {
	for _, tc := range []struct{ only, want string }{
		{"", "nodes,memory,mirror,reads,shrink,writes,latency,operations,fanout,replicas"},
		{"fanout", "fanout"},
		{"hubcost", "hubcost"},
		{"hubcost,fanout", "fanout,hubcost"},
		{"latency", "nodes,mirror,shrink,latency"},
		{"fanout,reads", "nodes,mirror,reads,fanout"},
		{"writes, latency", "nodes,mirror,shrink,writes,latency"},
		{"operations", "nodes,mirror,shrink,operations"},
	} {
		var only []string
		if tc.only != "" {
			only = strings.Split(tc.only, ",")
		}
		got, err := selectSteps(only)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range got {
			names = append(names, s.name)
		}
		if strings.Join(names, ",") != tc.want {
			t.Errorf("-only %q runs %v, want %s", tc.only, names, tc.want)
		}
	}
	if _, err := selectSteps([]string{"fan-out"}); err == nil || !strings.Contains(err.Error(), "fanout") {
		t.Errorf("an unknown scenario: %v, want an error that lists the scenarios", err)
	}
}

// The README links to the results file; the results file itself says its
// tables follow instead of linking to itself.
func TestSummaryLinks(t *testing.T) {
	r := &results{Scenarios: []string{"fanout"}}
	if s := summary(r, "bench/results-x.md"); !strings.Contains(s, "full tables in [bench/results-x.md](bench/results-x.md)") {
		t.Errorf("README summary: %s", s)
	}
	if md := markdown(r); strings.Contains(md, "](") || !strings.Contains(md, "full tables below") {
		t.Errorf("results file: %s", md)
	}
}

// TestNoSamplesNoNumber: a latency without samples says so in the
// summary and the tables instead of printing 0.0 ms.
func TestNoSamplesNoNumber(t *testing.T) {
	r := &results{Latency: []latencyRun{{TargetRate: 1000, AchievedRate: 267, Client: summarize([]time.Duration{time.Second})}}}
	md := markdown(r)
	if !strings.Contains(md, "member watch (floor): no samples |") || strings.Contains(md, "p50 0.0 ms") || !strings.Contains(md, "— (0 samples)") {
		t.Errorf("a floor without samples printed as:\n%s", md)
	}
}

// TestNegativeHopIsNotMet: when the bench's own member watch sees changes
// after the hub does, the operator hop is not a measurement, and the
// summary must not call the target met.
func TestNegativeHopIsNotMet(t *testing.T) {
	ms := func(v ...int) (ds []time.Duration) {
		for _, x := range v {
			ds = append(ds, time.Duration(x)*time.Millisecond)
		}
		return ds
	}
	r := &results{Latency: []latencyRun{{TargetRate: 1000, AchievedRate: 223,
		Floor: summarize(ms(1300, 1400, 2500)), OperatorHop: summarize(ms(-600, -500, 70)), Client: summarize(ms(2000))}}}
	md := markdown(r)
	if !strings.Contains(md, "not measured: the bench's member watch fell behind the operator") || strings.Contains(md, "): met") {
		t.Errorf("a negative operator hop printed as:\n%s", md)
	}
}
