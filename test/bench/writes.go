package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
)

const changeLabel = "bench.nodemirror.io/change"

// writeAmplification heartbeats every node of the first cluster for a
// while, then makes known meaningful changes, and counts the operator's
// hub writes for each phase exactly.
func (e *env) writeAmplification(ctx context.Context, res *results) error {
	cs := e.members[0]
	n := e.sz.NodesPerCluster
	w0 := e.operator.requests().SnapshotWrites

	// Every node heartbeats once per interval, spread evenly.
	var sent atomic.Int64
	total := int(e.sz.HeartbeatDuration/e.sz.HeartbeatInterval) * n
	rate := int(float64(n) / e.sz.HeartbeatInterval.Seconds())
	if err := paced(ctx, total, rate, 8, func(ctx context.Context, i int) error {
		sent.Add(1)
		return simulator.Heartbeat(ctx, cs, nodeName(0, 0, i%n))
	}); err != nil {
		return err
	}
	time.Sleep(3 * time.Second) // let the operator see the last ones
	w1 := e.operator.requests().SnapshotWrites
	res.WriteAmp.Nodes, res.WriteAmp.Heartbeats, res.WriteAmp.HeartbeatWrites = n, int(sent.Load()), w1-w0
	res.WriteAmp.WritesPerHeartbeat = float64(w1-w0) / float64(sent.Load())
	e.log("  %d heartbeats over %s: %d hub writes", sent.Load(), e.sz.HeartbeatDuration, w1-w0)

	// Meaningful changes: some alone, some in bursts on one node.
	want := map[string]string{}
	for i := range e.sz.SingleChanges {
		node := nodeName(0, 0, i%n)
		v := fmt.Sprintf("s%d", i)
		if err := simulator.PatchLabel(ctx, cs, node, changeLabel, ptr.To(v)); err != nil {
			return err
		}
		want[node] = v
		time.Sleep(20 * time.Millisecond)
	}
	for b := range e.sz.Bursts {
		node := nodeName(0, 0, n-1-b)
		for j := range e.sz.BurstSize {
			v := fmt.Sprintf("b%d-%d", b, j)
			if err := simulator.PatchLabel(ctx, cs, node, changeLabel, ptr.To(v)); err != nil {
				return err
			}
			want[node] = v
		}
	}
	if err := e.waitLabels(ctx, clusterName(0, 0), changeLabel, want, time.Minute); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	w2 := e.operator.requests().SnapshotWrites
	changes := e.sz.SingleChanges + e.sz.Bursts*e.sz.BurstSize
	res.WriteAmp.Changes, res.WriteAmp.BurstChanges, res.WriteAmp.ChangeWrites = changes, e.sz.Bursts*e.sz.BurstSize, w2-w1
	res.WriteAmp.WritesPerChange = float64(w2-w1) / float64(changes)
	e.log("  %d meaningful changes (%d in bursts): %d hub writes", changes, e.sz.Bursts*e.sz.BurstSize, w2-w1)
	return nil
}

// waitLabels waits until the snapshots of the given nodes carry label=value.
func (e *env) waitLabels(ctx context.Context, cluster, label string, want map[string]string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var list fleetv1.NodeSnapshotList
		if err := e.hub.List(ctx, &list, client.InNamespace("bench"), client.MatchingLabels{fleetv1.ClusterLabel: cluster}); err != nil {
			return err
		}
		got := map[string]string{}
		for _, s := range list.Items {
			got[s.Spec.NodeName] = s.Status.Labels[label]
		}
		missing := 0
		for node, v := range want {
			if got[node] != v {
				missing++
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d changes not mirrored after %s", missing, len(want), timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
