package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
)

// memberRequests counts, from a member API server's own metrics, the node
// lists it served and the node watches it started (finished ones are in
// apiserver_request_total, open ones in apiserver_longrunning_requests).
func (e *env) memberRequests(ctx context.Context, m int) (map[string]float64, error) {
	body, err := e.members[m].CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !(strings.HasPrefix(l, "apiserver_request_total{") || strings.HasPrefix(l, "apiserver_longrunning_requests{")) ||
			!strings.Contains(l, `resource="nodes"`) || !strings.Contains(l, `subresource=""`) {
			continue
		}
		for _, verb := range []string{"LIST", "WATCH"} {
			if strings.Contains(l, `verb="`+verb+`"`) {
				v, _ := strconv.ParseFloat(l[strings.LastIndex(l, " ")+1:], 64)
				out[verb] += v
			}
		}
	}
	return out, nil
}

// countSnapshots counts the snapshots in a namespace, optionally of one cluster.
func (e *env) countSnapshots(ctx context.Context, ns, cluster string) (int, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	opts := []client.ListOption{client.InNamespace(ns)}
	if cluster != "" {
		opts = append(opts, client.MatchingLabels{fleetv1.ClusterLabel: cluster})
	}
	if err := e.hub.List(ctx, list, opts...); err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// snapshotAdds is a hub watch of the snapshots added to namespace from
// now on: the API server ends a watch that falls behind a burst of writes
// on this busy machine, so it resumes from the last event seen.
func (e *env) snapshotAdds(ctx context.Context, namespace string) (watch.Interface, error) {
	var list metav1.PartialObjectMetadataList
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	if err := e.hub.List(ctx, &list, client.InNamespace(namespace), client.Limit(1)); err != nil {
		return nil, err
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return e.hub.Watch(ctx, &fleetv1.NodeSnapshotList{}, client.InNamespace(namespace), &client.ListOptions{Raw: &o})
		},
	})
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) { return ev, ev.Type == watch.Added }), nil
}

func (e *env) waitSnapshots(ctx context.Context, ns, cluster string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n, err := e.countSnapshots(ctx, ns, cluster)
		if err == nil && n == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d snapshots in %s (cluster %q) after %s, want %d (%v)", n, ns, cluster, timeout, want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// initialMirror measures how fast every cluster's nodes become snapshots,
// against the hub's raw create rate for the same objects in the same run.
func (e *env) initialMirror(ctx context.Context, res *results) error {
	clusters := e.sz.Members * e.sz.ClustersPerMember
	total := clusters * e.sz.NodesPerCluster
	res.Mirror.Clusters, res.Mirror.NodesPerCluster = clusters, e.sz.NodesPerCluster

	took, cpu, err := e.rawCreate(ctx)
	if err != nil {
		return err
	}
	res.Mirror.HubCreateSeconds, res.Mirror.RawCPU = secs(took), cpu
	res.Mirror.HubCreatesPerSecond = math.Round(float64(total) / took.Seconds())
	e.log("  hub raw create: %d snapshots in %.1fs", total, res.Mirror.HubCreateSeconds)

	before := make([]map[string]float64, e.sz.Members)
	for m := range e.sz.Members {
		var err error
		if before[m], err = e.memberRequests(ctx, m); err != nil {
			return err
		}
	}
	// Count snapshots as they appear, from one hub watch.
	w, err := e.snapshotAdds(ctx, "bench")
	if err != nil {
		return err
	}
	defer w.Stop()
	profiled := func() error { return nil }
	if e.profile != "" {
		profiled = e.profileOperatorAndHub(ctx, "mirror", 20)
	}
	meter := e.startCPU()
	start := time.Now()
	for m := range e.sz.Members {
		for s := range e.sz.ClustersPerMember {
			if err := e.hub.Create(ctx, e.cluster(clusterName(m, s), m, fmt.Sprint(s))); err != nil {
				return err
			}
		}
	}
	seen := 0
	timeout := time.After(10 * time.Minute)
	for seen < total {
		select {
		case _, ok := <-w.ResultChan():
			if !ok {
				return fmt.Errorf("hub watch closed after %d snapshots", seen)
			}
			seen++
		case <-timeout:
			return fmt.Errorf("only %d of %d snapshots after 10 minutes", seen, total)
		}
	}
	took = time.Since(start)
	res.Mirror.OperatorCPU = meter.stop()
	res.Mirror.Seconds = secs(took)
	res.Mirror.SnapshotsPerSecond = math.Round(float64(total) / took.Seconds())
	e.log("  operator: %d snapshots in %.1fs (%d/s)", total, res.Mirror.Seconds, int(res.Mirror.SnapshotsPerSecond))
	if err := profiled(); err != nil {
		return err
	}
	if err := e.waitClustersReady(ctx); err != nil {
		return err
	}
	var lists, watches float64
	for m := range e.sz.Members {
		after, err := e.memberRequests(ctx, m)
		if err != nil {
			return err
		}
		lists += after["LIST"] - before[m]["LIST"]
		watches += after["WATCH"] - before[m]["WATCH"]
	}
	res.Mirror.ListsPerCluster = lists / float64(clusters)
	res.Mirror.WatchesPerCluster = watches / float64(clusters)

	var list fleetv1.NodeSnapshotList
	if err := e.hub.List(ctx, &list, client.InNamespace("bench"), client.MatchingLabels{fleetv1.ClusterLabel: clusterName(0, 0)}); err != nil {
		return err
	}
	var sizes []int
	for i := range list.Items {
		list.Items[i].ManagedFields = nil
		b, _ := json.Marshal(&list.Items[i])
		sizes = append(sizes, len(b))
	}
	res.Memory.SnapshotJSONMedian, res.Memory.SnapshotJSONP99 = percentileInt(sizes, .5), percentileInt(sizes, .99)

	h, err := e.operator.heap()
	if err != nil {
		return err
	}
	base := e.operatorBase
	res.Memory.NodesAtAll = total
	res.Memory.OperatorBytesPerNode10k = math.Round((float64(h.HeapAlloc) - base) / float64(total))
	return nil
}

func (e *env) waitClustersReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var list fleetv1.ManagedClusterList
		if err := e.hub.List(ctx, &list, client.InNamespace("bench")); err != nil {
			return err
		}
		ready := 0
		for _, mc := range list.Items {
			if meta.IsStatusConditionTrue(mc.Status.Conditions, fleetv1.ConditionReady) {
				ready++
			}
		}
		if ready == len(list.Items) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d ManagedClusters Ready", ready, len(list.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// memoryAtOneCluster mirrors the first cluster alone, from nothing, and
// measures the operator's heap per node; then removes it again, so that the
// initial mirror starts from nothing too.
func (e *env) memoryAtOneCluster(ctx context.Context, res *results) error {
	mc := e.cluster(clusterName(0, 0), 0, "0")
	if err := e.hub.Create(ctx, mc); err != nil {
		return err
	}
	if err := e.waitSnapshots(ctx, "bench", "", e.sz.NodesPerCluster, 5*time.Minute); err != nil {
		return err
	}
	if err := e.waitClustersReady(ctx); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	h, err := e.operator.heap()
	if err != nil {
		return err
	}
	res.Memory.OperatorBytesPerNode1k = math.Round((float64(h.HeapAlloc) - e.operatorBase) / float64(e.sz.NodesPerCluster))
	e.log("  operator heap: %.0f B per node with one cluster of %d", res.Memory.OperatorBytesPerNode1k, e.sz.NodesPerCluster)
	if err := e.hub.Delete(ctx, mc); err != nil {
		return err
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		err := e.hub.Get(ctx, client.ObjectKeyFromObject(mc), &fleetv1.ManagedCluster{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ManagedCluster %s still there a minute after its deletion", mc.Name)
		}
	}
	return e.waitSnapshots(ctx, "bench", "", 0, time.Minute)
}

// shrinkToOneCluster deletes all clusters but the first, so that the
// write and latency measurements see one cluster's traffic only.
func (e *env) shrinkToOneCluster(ctx context.Context, _ *results) error {
	for m := range e.sz.Members {
		for s := range e.sz.ClustersPerMember {
			if m == 0 && s == 0 {
				continue
			}
			if err := e.hub.Delete(ctx, &fleetv1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: clusterName(m, s)}}); err != nil {
				return err
			}
		}
	}
	return e.waitSnapshots(ctx, "bench", "", e.sz.NodesPerCluster, 5*time.Minute)
}

// reads compares listing snapshots from the sidecar's cache with listing
// them from the hub API server, same objects, same run.
func (e *env) reads(ctx context.Context, res *results) error {
	type target struct {
		name, sidecarPath string
		hubPath           string
		count             int
	}
	all := e.sz.Members * e.sz.ClustersPerMember * e.sz.NodesPerCluster
	targets := []target{
		{fmt.Sprintf("%d snapshots (one cluster)", e.sz.NodesPerCluster), "/api/v1/namespaces/bench/nodesnapshots?cluster=" + clusterName(0, 0),
			"/apis/fleet.nodemirror.io/v1alpha1/namespaces/bench/nodesnapshots?labelSelector=" + fleetv1.ClusterLabel + "%3D" + clusterName(0, 0), e.sz.NodesPerCluster},
		{fmt.Sprintf("%d snapshots (a namespace)", all), "/api/v1/namespaces/ceiling/nodesnapshots",
			"/apis/fleet.nodemirror.io/v1alpha1/namespaces/ceiling/nodesnapshots", all},
	}
	hubHTTP, err := rest.HTTPClientFor(e.hubCfg)
	if err != nil {
		return err
	}
	// Both sides are read the same way: one GET, timed until the last byte
	// of the response; the items are counted afterwards, untimed.
	list := func(c *http.Client, url string) (time.Duration, int, error) {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			return 0, 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("GET %s: %s %v: %.300s", url, resp.Status, err, body)
		}
		var l struct{ Items []json.RawMessage }
		err = json.Unmarshal(body, &l)
		return took, len(l.Items), err
	}
	for _, t := range targets {
		var sidecarTimes, hubTimes []time.Duration
		for range e.sz.ReadRequests {
			took, n, err := list(http.DefaultClient, "http://"+e.sidecarAt+t.sidecarPath)
			sidecarTimes = append(sidecarTimes, took)
			if err != nil || n != t.count {
				return fmt.Errorf("sidecar list %s: %d items, want %d (%v)", t.sidecarPath, n, t.count, err)
			}

			took, n, err = list(hubHTTP, strings.TrimSuffix(e.hubCfg.Host, "/")+t.hubPath)
			hubTimes = append(hubTimes, took)
			if err != nil || n != t.count {
				return fmt.Errorf("hub list: %d items, want %d (%v)", n, t.count, err)
			}
		}
		r := readRun{What: t.name, Sidecar: summarize(sidecarTimes), Hub: summarize(hubTimes)}
		r.Speedup = ratio(r.Hub.P50, r.Sidecar.P50)
		res.Reads = append(res.Reads, r)
		e.log("  %s: sidecar p50 %.1fms, hub p50 %.1fms", t.name, r.Sidecar.P50, r.Hub.P50)
	}
	return nil
}

type readRun struct {
	What    string  `json:"what"`
	Sidecar dist    `json:"sidecar"`
	Hub     dist    `json:"hub"`
	Speedup float64 `json:"hubOverSidecarP50"`
}

func secs(d time.Duration) float64 { return math.Round(d.Seconds()*10) / 10 }

// rawCreateNamespace holds the raw create's snapshots, which stay for the
// reads scenario.
const rawCreateNamespace = "ceiling"

// rawCreate creates every cluster's snapshots straight on the hub, 16 at a
// time, counted by the same kind of hub watch as the operator's.
func (e *env) rawCreate(ctx context.Context) (time.Duration, cpuUse, error) {
	const ns = rawCreateNamespace
	var objs []*fleetv1.NodeSnapshot
	for m := range e.sz.Members {
		for s := range e.sz.ClustersPerMember {
			for i := range e.sz.NodesPerCluster {
				n := simulator.RealisticNode(nodeName(m, s, i), map[string]string{shardLabel: fmt.Sprint(s)})
				n.CreationTimestamp = metav1.Now()
				objs = append(objs, snapshotFor(ns, clusterName(m, s), n))
			}
		}
	}
	// The same kind of hub watch counts both runs' snapshots, so that
	// both pay for the same watchers.
	counter, err := e.snapshotAdds(ctx, ns)
	if err != nil {
		return 0, cpuUse{}, err
	}
	defer counter.Stop()
	var seen atomic.Int64
	go func() {
		for range counter.ResultChan() {
			seen.Add(1)
		}
	}()
	profiled := func() error { return nil }
	if e.profile != "" {
		profiled = e.profileHub(ctx, "mirror-raw-create", 20)
	}
	meter := e.startCPU()
	start := time.Now()
	if err := parallel(ctx, len(objs), 16, func(ctx context.Context, i int) error { return e.hub.Create(ctx, objs[i]) }); err != nil {
		return 0, cpuUse{}, err
	}
	took := time.Since(start)
	cpu := meter.stop()
	if err := profiled(); err != nil {
		return 0, cpuUse{}, err
	}
	// The watch's last events may trail the creates on a busy machine.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return seen.Load() >= int64(len(objs)), nil
	})
	if err != nil {
		return 0, cpuUse{}, fmt.Errorf("the hub watch saw %d of %d raw creates in %s: %w", seen.Load(), len(objs), ns, err)
	}
	return took, cpu, nil
}
