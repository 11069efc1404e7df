package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
)

// floorSeq numbers the writes of hubWriteFloor across its runs.
var floorSeq atomic.Int64

// hubWriteFloor writes the same kind of change the operator makes, at rate
// changes/s for duration, straight to the hub (a server-side apply of a raw
// create's snapshot, as the operator writes its own), and times each write
// to the event a hub watch sees: the hub's own write-to-watch latency at
// that rate, which the operator hop adds its own work to. Meanwhile the
// same node patches go to a member at the same rate, on nodes no cluster
// mirrors, so that the machine carries the member's share of the load too;
// the operator is idle.
func (e *env) hubWriteFloor(ctx context.Context, rate int, duration time.Duration) (dist, float64, cpuUse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cluster := clusterName(0, 0)
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	if err := e.hub.List(ctx, &list, client.InNamespace(rawCreateNamespace), client.Limit(1)); err != nil {
		return dist{}, 0, cpuUse{}, err
	}
	// A retry watcher: the hub may end a watch on a busy machine.
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = fleetv1.ClusterLabel + "=" + cluster
			return e.hub.Watch(ctx, &fleetv1.NodeSnapshotList{}, client.InNamespace(rawCreateNamespace), &client.ListOptions{Raw: &o})
		},
	})
	if err != nil {
		return dist{}, 0, cpuUse{}, err
	}
	defer w.Stop()
	var mu sync.Mutex
	sent, seen := map[int]time.Time{}, map[int]time.Time{}
	var watchErr error
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for ev := range w.ResultChan() {
			now := time.Now()
			if ev.Type == watch.Error {
				mu.Lock()
				watchErr = apierrors.FromObject(ev.Object)
				mu.Unlock()
				continue
			}
			if s, ok := ev.Object.(*fleetv1.NodeSnapshot); ok && ev.Type == watch.Modified {
				if seq, err := strconv.Atoi(s.Status.Labels[seqLabel]); err == nil {
					mu.Lock()
					if _, dup := seen[seq]; !dup {
						seen[seq] = now
					}
					mu.Unlock()
				}
			}
		}
	}()
	total := max(1, int(float64(rate)*duration.Seconds()))
	// Sequence numbers new to every run: a write of what a snapshot holds
	// already would change nothing and make no event.
	first := int(floorSeq.Add(int64(total))) - total
	meter := e.startCPU()
	start := time.Now()
	var memberErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		// Cluster 1/0 is not mirrored once the bench is back to one cluster.
		memberErr = paced(ctx, total, max(rate, 1), 32, func(ctx context.Context, i int) error {
			return simulator.PatchLabel(ctx, e.members[1], nodeName(1, 0, i%e.sz.NodesPerCluster), seqLabel, ptr.To(strconv.Itoa(first+i)))
		})
	})
	err = paced(ctx, total, max(rate, 1), 32, func(ctx context.Context, i int) error {
		i += first
		n := simulator.RealisticNode(nodeName(0, 0, i%e.sz.NodesPerCluster), map[string]string{shardLabel: "0", seqLabel: strconv.Itoa(i)})
		snap := snapshotFor(rawCreateNamespace, cluster, n)
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		return e.applySnapshot(ctx, snap)
	})
	wg.Wait()
	if err = errors.Join(err, memberErr); err != nil {
		return dist{}, 0, cpuUse{}, err
	}
	achieved := float64(total) / time.Since(start).Seconds()
	used := meter.stop()
	// Stragglers: until every write is seen, or 10s.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		done := len(seen) >= total
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-closed:
			mu.Lock()
			defer mu.Unlock()
			return dist{}, 0, cpuUse{}, fmt.Errorf("the hub watch closed after %d of %d writes straight to the hub (last error: %v)", len(seen), total, watchErr)
		default:
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var ds []time.Duration
	for seq, t0 := range sent {
		if t1, ok := seen[seq]; ok {
			ds = append(ds, t1.Sub(t0))
		}
	}
	return summarize(ds), float64(int(achieved*10)) / 10, used, nil
}
