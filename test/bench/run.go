package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/projection"
	"github.com/nodemirror/nodemirror/internal/simulator"
	"github.com/nodemirror/nodemirror/test/framework"
)

// results is everything one run measured.
type results struct {
	Date    string `json:"date"`
	Machine string `json:"machine"`
	CPUs    int    `json:"cpus"`
	Sizes   sizes  `json:"sizes"`

	WriteAmp    writeAmp       `json:"writeAmplification"`
	Latency     []latencyRun   `json:"latency"`
	Mirror      initialMirror  `json:"initialMirror"`
	Memory      memory         `json:"memory"`
	Fanout      []fanoutRun    `json:"fanout"`
	FanoutWatch map[string]int `json:"fanoutHubWatches"`
	Reads       []readRun      `json:"reads"`
	Notes       []string       `json:"notes,omitempty"`
}

type writeAmp struct {
	Nodes              int     `json:"nodes"`
	Heartbeats         int     `json:"heartbeats"`
	HeartbeatWrites    int     `json:"heartbeatWrites"`
	WritesPerHeartbeat float64 `json:"writesPerHeartbeat"`
	Changes            int     `json:"meaningfulChanges"`
	BurstChanges       int     `json:"ofWhichInBursts"`
	ChangeWrites       int     `json:"changeWrites"`
	WritesPerChange    float64 `json:"writesPerChange"`
}

type initialMirror struct {
	Clusters, NodesPerCluster int
	Seconds                   float64 `json:"seconds"`
	SnapshotsPerSecond        float64 `json:"snapshotsPerSecond"`
	HubCreateSeconds          float64 `json:"hubRawCreateSeconds"`
	HubCreatesPerSecond       float64 `json:"hubRawCreatesPerSecond"`
	ListsPerCluster           float64 `json:"memberListsPerCluster"`
	WatchesPerCluster         float64 `json:"memberWatchesPerCluster"`
}

type memory struct {
	OperatorBytesPerNode1k  float64 `json:"operatorHeapBytesPerNodeAt1k"`
	OperatorBytesPerNode10k float64 `json:"operatorHeapBytesPerNodeAtAll"`
	NodesAtAll              int     `json:"nodesAtAll"`
	SidecarHeapPerClient    float64 `json:"sidecarHeapBytesPerIdleClient"`
	SidecarStackPerClient   float64 `json:"sidecarStackBytesPerIdleClient"`
	SnapshotJSONMedian      int     `json:"snapshotJSONMedian"`
	SnapshotJSONP99         int     `json:"snapshotJSONP99"`
	NodeJSONMedian          int     `json:"nodeJSONMedian"`
	NodeJSONP99             int     `json:"nodeJSONP99"`
}

// env is the running benchmark setup.
type env struct {
	sz        sizes
	log       func(string, ...any)
	hubCfg    *rest.Config
	hub       client.WithWatch
	members   []kubernetes.Interface
	memberCfg []*rest.Config
	memberEnv []*envtest.Environment
	operator  *child
	sidecar   *child
	sidecarAt string
	dir       string
	// operatorBase is the operator's heap with nothing to mirror.
	operatorBase float64
}

func run(ctx context.Context, sz sizes, log func(string, ...any)) (*results, error) {
	res := &results{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Machine: machine(), CPUs: runtime.NumCPU(), Sizes: sz}
	e, cleanup, err := setup(ctx, sz, log)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	steps := []struct {
		name string
		fn   func(context.Context, *results) error
	}{
		{"member nodes", e.createNodes},
		{"memory at one cluster", e.memoryAtOneCluster},
		{"initial mirror", e.initialMirror},
		{"reads", e.reads},
		{"back to one cluster", e.shrinkToOneCluster},
		{"write amplification", e.writeAmplification},
		{"propagation latency", e.latency},
		{"fan-out", e.fanout},
	}
	for _, s := range steps {
		start := time.Now()
		log("— %s", s.name)
		if err := s.fn(ctx, res); err != nil {
			return res, fmt.Errorf("%s: %w", s.name, err)
		}
		log("  %s done in %s", s.name, time.Since(start).Round(100*time.Millisecond))
	}
	return res, nil
}

// setup starts the hub, the members, the operator and the sidecar.
func setup(ctx context.Context, sz sizes, log func(string, ...any)) (_ *env, cleanup func(), err error) {
	if err := framework.CheckAssets(); err != nil {
		return nil, nil, err
	}
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	e := &env{sz: sz, log: log}
	if e.dir, err = os.MkdirTemp("", "nodemirror-bench-"); err != nil {
		return nil, nil, err
	}
	undo = append(undo, func() { os.RemoveAll(e.dir) })

	log("starting a hub and %d member API servers", sz.Members)
	hubEnv := framework.NewHub()
	envs := []*envtest.Environment{hubEnv}
	for range sz.Members {
		envs = append(envs, framework.NewMember())
	}
	undo = append(undo, func() { framework.StopAll(envs...) })
	cfgs, err := framework.StartAll(envs...)
	if err != nil {
		return nil, nil, err
	}
	e.hubCfg = rest.CopyConfig(cfgs[0])
	e.hubCfg.QPS, e.hubCfg.Burst = 2000, 4000
	if e.hub, err = client.NewWithWatch(e.hubCfg, client.Options{Scheme: framework.Scheme()}); err != nil {
		return nil, nil, err
	}
	for i, cfg := range cfgs[1:] {
		cfg.QPS, cfg.Burst = 2000, 4000
		e.memberCfg = append(e.memberCfg, cfg)
		e.members = append(e.members, kubernetes.NewForConfigOrDie(cfg))
		e.memberEnv = append(e.memberEnv, envs[i+1])
	}
	hubKubeconfig := filepath.Join(e.dir, "hub.kubeconfig")
	raw, err := framework.Kubeconfig(hubEnv, "bench", []string{"system:masters"}, "")
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(hubKubeconfig, raw, 0o600); err != nil {
		return nil, nil, err
	}
	if e.operator, err = startChild("operator", hubKubeconfig); err != nil {
		return nil, nil, err
	}
	undo = append(undo, e.operator.stop)
	e.sidecarAt = freeAddr()
	if e.sidecar, err = startChild("sidecar", hubKubeconfig, e.sidecarAt); err != nil {
		return nil, nil, err
	}
	undo = append(undo, e.sidecar.stop)
	log("operator and sidecar running; /heap, /requests and /debug/pprof/ on %s and %s", e.operator.debug, e.sidecar.debug)
	for _, ns := range []string{"bench", "ceiling", "fanout", "fanout-idle"} {
		if err := e.hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return nil, nil, err
		}
	}
	for m := range e.members {
		kubeconfig, err := framework.Kubeconfig(e.memberEnv[m], fmt.Sprintf("bench-operator-%d", m), []string{"system:masters"}, "")
		if err != nil {
			return nil, nil, err
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("member-%d", m)}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
		if err := e.hub.Create(ctx, secret); err != nil {
			return nil, nil, err
		}
	}
	// The operator's baseline heap is taken with one cluster that selects no
	// node, mirrored and Ready: every lazy initialisation on the mirroring
	// path has happened, so what follows is the cost of nodes.
	if err := e.hub.Create(ctx, e.cluster("warmup", 0, "none")); err != nil {
		return nil, nil, err
	}
	if err := e.waitClustersReady(ctx); err != nil {
		return nil, nil, err
	}
	time.Sleep(time.Second)
	h, err := e.operator.heap()
	if err != nil {
		return nil, nil, err
	}
	e.operatorBase = float64(h.HeapAlloc)
	return e, cleanup, nil
}

// parallel runs fn(i) for i in [0, n) on workers goroutines.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// cluster is a ManagedCluster for the nodes of one shard of a member.
func (e *env) cluster(name string, member int, shard string) *fleetv1.ManagedCluster {
	return &fleetv1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: name},
		Spec: fleetv1.ManagedClusterSpec{
			KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: fmt.Sprintf("member-%d", member)},
			NodeSelector:        &metav1.LabelSelector{MatchLabels: map[string]string{shardLabel: shard}},
		},
	}
}

// paced runs fn(i) for i in [0, total) at rate calls per second: a ticker
// releases the calls and workers make them, so that one slow request does
// not hold back the rate.
func paced(ctx context.Context, total, rate, workers int, fn func(ctx context.Context, i int) error) error {
	tokens := make(chan int, total)
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		defer close(tokens)
		for i := range total {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tokens <- i
		}
	}()
	return parallel(ctx, total, workers, func(ctx context.Context, _ int) error {
		i, ok := <-tokens
		if !ok {
			return nil
		}
		return fn(ctx, i)
	})
}

func nodeName(member, shard, i int) string { return fmt.Sprintf("m%d-s%d-n%04d", member, shard, i) }
func clusterName(member, shard int) string { return fmt.Sprintf("c%d-%d", member, shard) }

const shardLabel = "bench.nodemirror.io/shard"

// createNodes registers realistic nodes on every member, a shard of
// NodesPerCluster per cluster, and measures full Node sizes.
func (e *env) createNodes(ctx context.Context, res *results) error {
	for m, cs := range e.members {
		n := e.sz.ClustersPerMember * e.sz.NodesPerCluster
		if err := parallel(ctx, n, 16, func(ctx context.Context, i int) error {
			shard, idx := i/e.sz.NodesPerCluster, i%e.sz.NodesPerCluster
			_, err := simulator.CreateNode(ctx, cs, simulator.RealisticNode(nodeName(m, shard, idx), map[string]string{shardLabel: fmt.Sprint(shard)}))
			return err
		}); err != nil {
			return err
		}
		e.log("  member %d: %d nodes", m, n)
	}
	list, err := e.members[0].CoreV1().Nodes().List(ctx, metav1.ListOptions{Limit: 1000})
	if err != nil {
		return err
	}
	var sizes []int
	for i := range list.Items {
		b, _ := json.Marshal(&list.Items[i])
		sizes = append(sizes, len(b))
	}
	res.Memory.NodeJSONMedian, res.Memory.NodeJSONP99 = percentileInt(sizes, .5), percentileInt(sizes, .99)
	return nil
}

// snapshotFor is the snapshot the operator would write for a member node,
// used for the hub's raw create ceiling.
func snapshotFor(ns, cluster string, n *corev1.Node) *fleetv1.NodeSnapshot {
	f := projection.NewFilter(fleetv1.MirrorSpec{})
	st := projection.Project(n, f)
	return &fleetv1.NodeSnapshot{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: projection.SnapshotName(cluster, n.Name),
			Labels:      map[string]string{fleetv1.ClusterLabel: cluster},
			Annotations: map[string]string{fleetv1.DigestAnnotation: projection.Digest(&st)},
		},
		Spec:   fleetv1.NodeSnapshotSpec{ClusterName: cluster, NodeName: n.Name},
		Status: st,
	}
}
