package main

import (
	"context"
	"fmt"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// replicaRound is the initial mirror of every cluster by n sharded
// operator replicas.
type replicaRound struct {
	Replicas int     `json:"replicas"`
	Seconds  float64 `json:"seconds"`
	// HubWrites are the snapshot writes all replicas made, from their own
	// request counters; WritesPerReplica is how they were shared.
	HubWrites        int   `json:"hubSnapshotWrites"`
	WritesPerReplica []int `json:"snapshotWritesPerReplica"`
	// HeapPerReplica is each replica's heap above a replica with nothing
	// to mirror, after the mirror.
	HeapPerReplica []float64 `json:"heapBytesPerReplica"`
}

// replicas mirrors the whole member set once with one sharded operator
// replica and once with two, each time into a namespace of its own: the
// hub writes should not change, and each of two replicas should hold about
// half the memory of one. The unsharded operator of the other scenarios
// is stopped first (it would take the clusters too), so this step runs
// last.
func (e *env) replicas(ctx context.Context, res *results) error {
	e.operator.stop()
	if err := e.hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shardNamespace}}); client.IgnoreAlreadyExists(err) != nil {
		return err
	}
	total := e.sz.Members * e.sz.ClustersPerMember * e.sz.NodesPerCluster
	for round, n := range []int{1, 2} {
		ns := fmt.Sprintf("sharded-%d", n)
		if err := e.copySecrets(ctx, ns); err != nil {
			return err
		}
		var reps []*child
		stopAll := func() {
			for _, r := range reps {
				r.stop()
			}
		}
		for i := range n {
			c, err := startChild("operator", []string{fmt.Sprintf("%s=bench-%d-%d", shardEnv, round, i)}, e.hubKubeconfig)
			if err != nil {
				stopAll()
				return err
			}
			reps = append(reps, c)
		}
		// Every replica's baseline, before it has anything to mirror, once
		// its caches of the hub have filled: a baseline read while they
		// still fill would count them as the replica's share of nodes.
		base := make([]float64, n)
		for i, r := range reps {
			h, err := settledHeap(ctx, r)
			if err != nil {
				stopAll()
				return err
			}
			base[i] = h
		}
		start := time.Now()
		for m := range e.sz.Members {
			for s := range e.sz.ClustersPerMember {
				mc := e.cluster(clusterName(m, s), m, fmt.Sprint(s))
				mc.Namespace = ns
				if err := e.hub.Create(ctx, mc); err != nil {
					stopAll()
					return err
				}
			}
		}
		if err := e.waitSnapshots(ctx, ns, "", total, 10*time.Minute); err != nil {
			stopAll()
			return err
		}
		r := replicaRound{Replicas: n, Seconds: secs(time.Since(start))}
		// Writes still in flight when the count was reached land in the
		// next moments; the status and the heap settle too.
		time.Sleep(3 * time.Second)
		for i, rep := range reps {
			w := rep.requests().SnapshotWrites
			r.HubWrites += w
			r.WritesPerReplica = append(r.WritesPerReplica, w)
			h, err := rep.heap()
			if err != nil {
				stopAll()
				return err
			}
			r.HeapPerReplica = append(r.HeapPerReplica, math.Round(float64(h.HeapAlloc)-base[i]))
		}
		stopAll()
		// Out of the next round's way: without an operator to run the
		// finalizer, drop it, and leave the snapshots behind.
		if err := e.forgetClusters(ctx, ns); err != nil {
			return err
		}
		res.Replicas = append(res.Replicas, r)
		e.log("  %d replica(s): %d snapshots in %.1fs, %d hub writes, heap per replica %v, writes per replica %v", n, total, r.Seconds, r.HubWrites, r.HeapPerReplica, r.WritesPerReplica)
	}
	return nil
}

// settledHeap is a child's heap after GC once two reads a second apart
// agree within 2%, or after 15 seconds.
func settledHeap(ctx context.Context, c *child) (float64, error) {
	prev := -1.0
	for deadline := time.Now().Add(15 * time.Second); ; {
		h, err := c.heap()
		if err != nil {
			return 0, err
		}
		cur := float64(h.HeapAlloc)
		if math.Abs(cur-prev) <= 0.02*cur || time.Now().After(deadline) {
			return cur, nil
		}
		prev = cur
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// copySecrets puts the member kubeconfig Secrets into ns.
func (e *env) copySecrets(ctx context.Context, ns string) error {
	if err := e.hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return err
	}
	for m := range e.sz.Members {
		var s corev1.Secret
		if err := e.hub.Get(ctx, client.ObjectKey{Namespace: "bench", Name: fmt.Sprintf("member-%d", m)}, &s); err != nil {
			return err
		}
		cp := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: s.Name, Labels: s.Labels}, Data: s.Data}
		if err := e.hub.Create(ctx, cp); err != nil {
			return err
		}
	}
	return nil
}

// forgetClusters deletes the ManagedClusters of ns without their finalizer.
func (e *env) forgetClusters(ctx context.Context, ns string) error {
	var list fleetv1.ManagedClusterList
	if err := e.hub.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return err
	}
	for i := range list.Items {
		mc := &list.Items[i]
		if len(mc.Finalizers) > 0 {
			patch := client.MergeFrom(mc.DeepCopy())
			mc.Finalizers = nil
			if err := e.hub.Patch(ctx, mc, patch); err != nil {
				return err
			}
		}
		if err := client.IgnoreNotFound(e.hub.Delete(ctx, mc)); err != nil {
			return err
		}
	}
	return nil
}
