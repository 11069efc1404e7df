package session

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/projection"
)

// Config is what a session needs to mirror one member cluster.
type Config struct {
	// Cluster is the ManagedCluster; its namespace holds the snapshots.
	Cluster types.NamespacedName
	// Owner is the controller owner reference put on every snapshot.
	Owner metav1.OwnerReference
	// Member reaches the member API server (see package member).
	Member *rest.Config
	// Selector is the label selector sent with the member list and watch.
	Selector string
	// Filter chooses the mirrored labels and annotations.
	Filter projection.Filter
	// Resync is the member informer's resync period.
	Resync time.Duration
	// Hub writes the snapshots.
	Hub client.Client
	// HubReader reads snapshots without a cache: once at start, and to
	// recover from a conflict.
	HubReader client.Reader
	// HubMetadata watches the cluster's own snapshots on the hub, metadata
	// only, so that one someone else deletes is written again (nil: not
	// watched). A watch per session, not a cache of every snapshot in
	// every operator replica, so that a replica's memory follows the
	// clusters it owns.
	HubMetadata metadata.Interface
	// Probe tunes the health prober.
	Probe ProbeOptions
	// WriteBudget, shared by all sessions, gives each cluster its own share
	// of the hub write budget (nil: no per-cluster limit).
	WriteBudget *WriteBudget
	// WriteGate, shared by all sessions, bounds the hub writes in flight
	// and shares them fairly between clusters (nil: not bounded).
	WriteGate *WriteGate
	// MaxNodes caps the cluster's snapshots (0: no cap): nodes past it are
	// not mirrored, and Status says how many.
	MaxNodes int
	// Workers write snapshots concurrently (different nodes only): the
	// most writes this cluster has in flight. Default 16.
	Workers int
	// OnChange is called when Status changes, at most once per
	// NotifyInterval (default 1s). It may block until ctx is done.
	OnChange       func(ctx context.Context)
	NotifyInterval time.Duration
	// Clock defaults to the real clock.
	Clock clock.WithTicker
	// Log defaults to a discarding logger.
	Log logr.Logger
}

// Status is what a session reports to its ManagedCluster.
type Status struct {
	Connection        Connection
	Synced            bool
	KubernetesVersion string
	Nodes             fleetv1.NodeSummary
	Capacity          corev1.ResourceList
	Allocatable       corev1.ResourceList
	// Unmirrored counts the nodes left out by Config.MaxNodes.
	Unmirrored int
}

// Session mirrors one member cluster. Its methods are safe for concurrent use.
type Session struct {
	cfg      Config
	log      logr.Logger
	metrics  *clusterMetrics
	informer cache.SharedIndexInformer
	// queue holds the names of nodes to sync; it coalesces bursts.
	queue    workqueue.TypedRateLimitingInterface[string]
	writer   *writer
	rest     rest.Interface
	cancel   context.CancelFunc
	done     chan struct{}
	changed  chan struct{}
	inflight atomic.Int32

	// mu guards what the prober, the informer's error handler and run
	// learn of the member, for Status.
	mu      sync.Mutex
	probed  Connection
	listErr *listError
	synced  bool
	version string
}

// plainListWatch makes the member informer list, then watch, instead of
// streaming its initial list through a watch: client-go's streaming path
// backs off after a failed attempt without heeding its context (up to
// 30 s), so a session of an unreachable member could not stop promptly.
// A list is bounded by member.Limits all the same.
type plainListWatch struct{ *cache.ListWatch }

// IsWatchListSemanticsUnSupported tells the reflector not to stream.
func (plainListWatch) IsWatchListSemanticsUnSupported() bool { return true }

// listError is a list or watch refusal seen by the informer, current until
// the informer makes progress again.
type listError struct {
	conn Connection
	// atResourceVersion is the informer's last synced resourceVersion when
	// the error came; once it moves, a list or watch worked again.
	atResourceVersion string
}

// Start begins mirroring and returns at once. The session runs until ctx is
// cancelled or Stop is called.
func Start(ctx context.Context, cfg Config) (*Session, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.NotifyInterval <= 0 {
		cfg.NotifyInterval = time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(context.Context) {}
	}
	cfg.Probe.defaults()
	memberCfg := rest.CopyConfig(cfg.Member)
	memberCfg.UserAgent = "nodemirror/" + cfg.Cluster.String()
	var s *Session // set below, before any request is made
	member.ReportWatchEventsTooLarge(memberCfg, func(err *member.ResponseTooLargeError) { s.watchError(ctx, nil, err) })
	cs, err := kubernetes.NewForConfig(memberCfg)
	if err != nil {
		return nil, fmt.Errorf("cannot build member client: %w", err)
	}
	s = &Session{
		cfg:     cfg,
		log:     cfg.Log.WithValues("managedCluster", klog.KRef(cfg.Cluster.Namespace, cfg.Cluster.Name)),
		metrics: newClusterMetrics(cfg.Cluster),
		rest:    cs.Discovery().RESTClient(),
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Clock: cfg.Clock},
		),
		probed: Connection{metav1.ConditionUnknown, fleetv1.ReasonConnecting, "connecting to the member API server"},
	}
	nodes := cs.CoreV1().Nodes()
	s.informer = cache.NewSharedIndexInformer(plainListWatch{&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = cfg.Selector
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = cfg.Selector
			return nodes.Watch(ctx, o)
		},
	}}, &corev1.Node{}, cfg.Resync, cache.Indexers{})
	s.writer = newWriter(&writer{
		cluster: cfg.Cluster, owner: cfg.Owner, filter: cfg.Filter,
		hub: cfg.Hub, hubReader: cfg.HubReader, metrics: s.metrics, clock: cfg.Clock,
		budget: cfg.WriteBudget, gate: cfg.WriteGate, maxNodes: cfg.MaxNodes, requeue: func(node string) { s.queue.Add(node) }, capChanged: s.notify,
		node: func(name string) (*mirroredNode, bool, error) {
			obj, exists, err := s.informer.GetStore().GetByKey(name)
			if !exists || err != nil {
				return nil, exists, err
			}
			return obj.(*mirroredNode), true, nil
		},
		getNode: func(ctx context.Context, name string) (*corev1.Node, error) {
			return nodes.Get(ctx, name, metav1.GetOptions{})
		},
	})
	if err := s.informer.SetTransform(s.transform); err != nil {
		return nil, err
	}
	if err := s.informer.SetWatchErrorHandlerWithContext(s.watchError); err != nil {
		return nil, err
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.enqueue(obj) },
		UpdateFunc: func(_, obj any) { s.enqueue(obj) },
		DeleteFunc: func(obj any) { s.enqueue(obj) },
	}); err != nil {
		return nil, err
	}
	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx)
	return s, nil
}

// Stop ends the session and waits until all of its goroutines have returned.
// The snapshots stay.
func (s *Session) Stop() {
	s.cancel()
	<-s.done
}

// Status reports connection, sync and a summary of the mirrored nodes.
func (s *Session) Status() Status {
	var st Status
	var capacity, allocatable [3]int64
	for _, obj := range s.informer.GetStore().List() {
		n := obj.(*mirroredNode).summary
		st.Nodes.Total++
		if n.ready {
			st.Nodes.Ready++
		}
		if n.unschedulable {
			st.Nodes.Unschedulable++
		}
		for i := range capacity {
			capacity[i] += n.capacity[i]
			allocatable[i] += n.allocatable[i]
		}
	}
	if st.Nodes.Total > 0 {
		st.Capacity, st.Allocatable = resourceList(capacity), resourceList(allocatable)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Connection = s.probed
	if s.listErr != nil && s.informer.LastSyncResourceVersion() == s.listErr.atResourceVersion &&
		s.probed.Status == metav1.ConditionTrue {
		st.Connection = s.listErr.conn
	}
	st.Synced = s.synced
	st.KubernetesVersion = s.version
	st.Unmirrored = s.writer.unmirrored()
	return st
}

// SnapshotLost tells the session that the hub lost a snapshot it wrote
// (someone deleted it): its node is written again.
func (s *Session) SnapshotLost(snapshotName string) {
	if node, ok := s.writer.lost(snapshotName); ok {
		s.log.Info("NodeSnapshot deleted by someone else; writing it again", "nodeSnapshot", klog.KRef(s.cfg.Cluster.Namespace, snapshotName))
		s.queue.Add(node)
	}
}

func (s *Session) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *Session) enqueue(obj any) {
	name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		s.log.Error(err, "Cannot key member node event")
		return
	}
	s.metrics.events.Inc()
	s.writer.changed(name)
	s.queue.Add(name)
	s.notify()
}

// watchError is the informer's list and watch error handler. It logs the
// classified error, not the error itself, which may quote what the member
// wrote, and reports refusals that the prober cannot see.
func (s *Session) watchError(_ context.Context, _ *cache.Reflector, err error) {
	c := classify(err)
	s.log.V(1).Info("Member node list or watch failed; retrying", "reason", c.Reason, "message", c.Message)
	if c.Reason != fleetv1.ReasonForbidden && c.Reason != fleetv1.ReasonUnauthorized && c.Reason != fleetv1.ReasonMemberResponseTooLarge {
		return // the prober reports reachability
	}
	c.Message = "cannot list and watch nodes: " + c.Message
	s.mu.Lock()
	s.listErr = &listError{conn: c, atResourceVersion: s.informer.LastSyncResourceVersion()}
	s.mu.Unlock()
	s.notify()
}

func (s *Session) run(ctx context.Context) {
	defer close(s.done)
	defer s.metrics.forget()
	defer s.cfg.WriteBudget.Forget(s.cfg.Cluster.String())
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.probeLoop(ctx) })
	wg.Go(func() { s.notifyLoop(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		s.queue.ShutDown()
	})

	var seededAt string
	if err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 1 << 30, Cap: 30 * time.Second},
		func(ctx context.Context) (bool, error) {
			var err error
			if seededAt, err = s.writer.seed(ctx); err != nil {
				s.log.Error(err, "Cannot list the cluster's NodeSnapshots on the hub; retrying")
				return false, nil
			}
			return true, nil
		}); err != nil {
		return // cancelled
	}
	wg.Go(func() { s.informer.RunWithContext(ctx) })
	wg.Go(func() { s.watchLost(ctx, seededAt) })
	for range s.cfg.Workers {
		wg.Go(func() {
			for s.processNext(ctx) {
			}
		})
	}
	if !cache.WaitForCacheSync(ctx.Done(), s.informer.HasSynced) {
		return
	}
	s.mu.Lock()
	s.listErr = nil
	s.mu.Unlock()
	for _, name := range s.writer.vanished() {
		s.queue.Add(name)
	}
	if err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		return s.queue.Len() == 0 && s.inflight.Load() == 0 && s.writer.settled(), nil
	}); err != nil {
		return
	}
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
	s.log.V(1).Info("Initial node list mirrored", "nodes", len(s.informer.GetStore().ListKeys()))
	s.notify()
	<-ctx.Done()
}

// processNext takes one node off the queue and syncs it: a failed write
// goes back with backoff, a successful one resets the node's backoff.
func (s *Session) processNext(ctx context.Context) bool {
	name, quit := s.queue.Get()
	if quit {
		return false
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	defer s.queue.Done(name)
	err := s.writer.sync(ctx, name)
	if err == nil {
		s.queue.Forget(name)
		return true
	}
	if ctx.Err() == nil {
		s.log.Error(err, "Cannot write NodeSnapshot; retrying with backoff", "node", name)
		s.queue.AddRateLimited(name)
	}
	return true
}

// watchLost watches the cluster's snapshots on the hub from resourceVersion
// rv and hands each one deleted to SnapshotLost. When the watch cannot
// resume (its point was compacted away), a fresh list finds what went
// meanwhile, and the watch starts again from it.
func (s *Session) watchLost(ctx context.Context, rv string) {
	if s.cfg.HubMetadata == nil {
		return
	}
	snapshots := s.cfg.HubMetadata.Resource(fleetv1.GroupVersion.WithResource("nodesnapshots")).Namespace(s.cfg.Cluster.Namespace)
	selector := labels.Set{fleetv1.ClusterLabel: s.cfg.Cluster.Name}.String()
	lw := &cache.ListWatch{WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.LabelSelector = selector
		return snapshots.Watch(ctx, o)
	}}
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Steps: 1 << 30, Cap: 30 * time.Second}
	for ctx.Err() == nil {
		if rv != "" {
			if w, err := watchtools.NewRetryWatcherWithContext(ctx, rv, lw); err == nil {
				for ev := range w.ResultChan() {
					if m, ok := ev.Object.(*metav1.PartialObjectMetadata); ok && ev.Type == watch.Deleted {
						s.SnapshotLost(m.Name)
					}
				}
				w.Stop()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Step()):
		}
		gone, next, err := s.writer.missing(ctx)
		if err != nil {
			s.log.V(1).Info("Cannot list the cluster's NodeSnapshots on the hub; retrying", "err", err)
			continue
		}
		for _, name := range gone {
			s.SnapshotLost(name)
		}
		rv = next
	}
}
