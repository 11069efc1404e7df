package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
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
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
	"github.com/nodemirror/nodemirror/internal/projection"
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
	// FanoutWriteFloor is one loopback write(2) per delivery, measured
	// after the fan-out rounds.
	FanoutWriteFloor *writeFloorRun `json:"fanoutWriteFloor,omitempty"`
	Reads            []readRun      `json:"reads"`
	Operations       *operationsRun `json:"operations,omitempty"`
	Replicas         []replicaRound `json:"replicas,omitempty"`
	HubCost          *hubCostRun    `json:"hubCost,omitempty"`
	Notes            []string       `json:"notes,omitempty"`
	// Scenarios are the steps that ran, when not all did.
	Scenarios []string `json:"scenarios,omitempty"`
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
	// The CPU of the raw create and of the operator's mirror, each while
	// the same hub watch counted its snapshots.
	RawCPU      cpuUse `json:"rawCreateCPU"`
	OperatorCPU cpuUse `json:"operatorMirrorCPU"`
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
	// hubKubeconfig is the file the children reach the hub with.
	hubKubeconfig string
	dir           string
	// operatorBase is the operator's heap with nothing to mirror.
	operatorBase float64
	// profile is where the fan-out rounds save the sidecar's profiles.
	profile string
}

// options are the choices of one run besides its sizes.
type options struct {
	// only names the scenarios to run, with the steps they need; all when
	// empty.
	only []string
	// profile, if set, is the directory for the sidecar's profiles of each
	// fan-out round.
	profile string
}

// step is one part of a run. The steps run in this order, and each one
// needs the steps in needs to have run before it: the latency and write
// scenarios, for instance, measure the one cluster that the initial mirror
// and the shrink leave.
type step struct {
	name, title string
	needs       []string
	fn          func(*env, context.Context, *results) error
}

var steps = []step{
	{"nodes", "member nodes", nil, (*env).createNodes},
	{"memory", "memory at one cluster", []string{"nodes"}, (*env).memoryAtOneCluster},
	{"mirror", "initial mirror", []string{"nodes"}, (*env).initialMirror},
	{"reads", "reads", []string{"mirror"}, (*env).reads},
	{"shrink", "back to one cluster", []string{"mirror"}, (*env).shrinkToOneCluster},
	{"writes", "write amplification", []string{"shrink"}, (*env).writeAmplification},
	{"latency", "propagation latency", []string{"shrink"}, (*env).latency},
	{"operations", "node operations", []string{"shrink"}, (*env).operations},
	{"fanout", "fan-out", nil, (*env).fanout},
	{"hubcost", "hub cost per snapshot", nil, (*env).hubCost},
	// Last: it stops the operator the others use.
	{"replicas", "sharded operator replicas", []string{"nodes"}, (*env).replicas},
}

// optInSteps run only when named in -only: they take too long for every
// run (hubcost writes 50,000 snapshots).
var optInSteps = []string{"hubcost"}

func (s step) optIn() bool { return slices.Contains(optInSteps, s.name) }

// defaultSteps are the steps of a run that names none.
func defaultSteps() []step {
	var out []step
	for _, s := range steps {
		if !s.optIn() {
			out = append(out, s)
		}
	}
	return out
}

func stepNames() []string {
	var names []string
	for _, s := range steps {
		names = append(names, s.name)
	}
	return names
}

// selectSteps returns the steps named in only and those they need, in run
// order; every step but the opt-in ones when only is empty.
func selectSteps(only []string) ([]step, error) {
	if len(only) == 0 {
		return defaultSteps(), nil
	}
	want := map[string]bool{}
	for _, name := range only {
		name = strings.TrimSpace(name)
		if !slices.Contains(stepNames(), name) {
			return nil, fmt.Errorf("unknown scenario %q: the scenarios are %s", name, strings.Join(stepNames(), ", "))
		}
		want[name] = true
	}
	// A step only needs earlier ones, so one pass backwards finds them all.
	for i := len(steps) - 1; i >= 0; i-- {
		if want[steps[i].name] {
			for _, n := range steps[i].needs {
				want[n] = true
			}
		}
	}
	var out []step
	for _, s := range steps {
		if want[s.name] {
			out = append(out, s)
		}
	}
	return out, nil
}

func run(ctx context.Context, sz sizes, opts options, log func(string, ...any)) (*results, error) {
	res := &results{Date: time.Now().UTC().Format("2006-01-02 15:04 MST"), Machine: machine(), CPUs: runtime.NumCPU(), Sizes: sz}
	todo, err := selectSteps(opts.only)
	if err != nil {
		return nil, err
	}
	if len(opts.only) > 0 && !slices.EqualFunc(todo, defaultSteps(), func(a, b step) bool { return a.name == b.name }) {
		for _, s := range todo {
			res.Scenarios = append(res.Scenarios, s.name)
		}
	}
	if opts.profile != "" {
		if err := os.MkdirAll(opts.profile, 0o755); err != nil {
			return nil, err
		}
	}
	e, cleanup, err := setup(ctx, sz, opts, log)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	for _, s := range todo {
		start := time.Now()
		log("— %s", s.title)
		if err := s.fn(e, ctx, res); err != nil {
			return res, fmt.Errorf("%s: %w", s.title, err)
		}
		log("  %s done in %s", s.title, time.Since(start).Round(100*time.Millisecond))
	}
	return res, nil
}

// setup starts the hub, the members, the operator and the sidecar; when it
// fails, it stops again what it started.
func setup(ctx context.Context, sz sizes, opts options, log func(string, ...any)) (_ *env, cleanup func(), err error) {
	if err := framework.CheckAssets(); err != nil {
		return nil, nil, err
	}
	var undo []func()
	undoAll := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil { // the error returns leave cleanup nil
			undoAll()
		}
	}()
	e := &env{sz: sz, log: log, profile: opts.profile}
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
	e.hubKubeconfig = hubKubeconfig
	raw, err := framework.Kubeconfig(hubEnv, "bench", []string{"system:masters"}, "")
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(hubKubeconfig, raw, 0o600); err != nil {
		return nil, nil, err
	}
	if e.operator, err = startChild("operator", nil, hubKubeconfig); err != nil {
		return nil, nil, err
	}
	undo = append(undo, e.operator.stop)
	e.sidecarAt = freeAddr()
	var sidecarEnv []string
	if opts.profile != "" {
		sidecarEnv = []string{profileEnv + "=1"}
	}
	if e.sidecar, err = startChild("sidecar", sidecarEnv, hubKubeconfig, e.sidecarAt); err != nil {
		return nil, nil, err
	}
	undo = append(undo, e.sidecar.stop)
	log("operator and sidecar running; /heap, /requests and /debug/pprof/ on %s and %s", e.operator.debug, e.sidecar.debug)
	for _, ns := range []string{"bench", rawCreateNamespace, "fanout", "fanout-idle"} {
		if err := e.hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return nil, nil, err
		}
	}
	for m := range e.members {
		kubeconfig, err := framework.Kubeconfig(e.memberEnv[m], fmt.Sprintf("bench-operator-%d", m), []string{"system:masters"}, "")
		if err != nil {
			return nil, nil, err
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("member-%d", m), Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
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
	return e, undoAll, nil
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
			Labels:      projection.SnapshotLabels(cluster, st.Labels),
			Annotations: map[string]string{fleetv1.DigestAnnotation: projection.Digest(&st), fleetv1.NodeNameAnnotation: n.Name},
		},
		Spec:   fleetv1.NodeSnapshotSpec{ClusterName: cluster, NodeName: n.Name},
		Status: st,
	}
}
