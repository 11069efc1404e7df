package session

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/version"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
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
	// Probe tunes the health prober.
	Probe ProbeOptions
	// Workers write snapshots concurrently (different nodes only). Default 2.
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
}

// Session mirrors one member cluster. Its methods are safe for concurrent use.
type Session struct {
	cfg      Config
	log      logr.Logger
	metrics  *clusterMetrics
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]
	rest     rest.Interface
	nodes    corev1client.NodeInterface
	cancel   context.CancelFunc
	done     chan struct{}
	changed  chan struct{}
	inflight atomic.Int32

	mu       sync.Mutex
	known    map[string]written   // node name → the snapshot the hub holds
	received map[string]time.Time // node name → first change not yet written
	retrying map[string]struct{}  // node names whose last write failed
	probed   Connection
	listErr  *listError
	synced   bool
	version  string
}

// written is what the writer knows of a snapshot on the hub.
type written struct {
	name            string
	digest          string
	resourceVersion string
}

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
		cfg.Workers = 2
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
	member := rest.CopyConfig(cfg.Member)
	member.UserAgent = "nodemirror/" + cfg.Cluster.String()
	cs, err := kubernetes.NewForConfig(member)
	if err != nil {
		return nil, fmt.Errorf("cannot build member client: %w", err)
	}
	s := &Session{
		cfg:     cfg,
		log:     cfg.Log.WithValues("managedCluster", klog.KRef(cfg.Cluster.Namespace, cfg.Cluster.Name)),
		metrics: newClusterMetrics(cfg.Cluster.String()),
		rest:    cs.Discovery().RESTClient(),
		nodes:   cs.CoreV1().Nodes(),
		done:    make(chan struct{}),
		changed: make(chan struct{}, 1),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Clock: cfg.Clock},
		),
		known:    map[string]written{},
		received: map[string]time.Time{},
		retrying: map[string]struct{}{},
		probed:   Connection{metav1.ConditionUnknown, fleetv1.ReasonConnecting, "connecting to the member API server"},
	}
	s.informer = coreinformers.NewFilteredNodeInformer(cs, cfg.Resync, cache.Indexers{}, func(o *metav1.ListOptions) {
		o.LabelSelector = cfg.Selector
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
	return st
}

// Forget tells the session that the hub lost a snapshot it wrote (someone
// deleted it): the node is written again.
func (s *Session) Forget(snapshotName string) {
	s.mu.Lock()
	var node string
	for n, w := range s.known {
		if w.name == snapshotName {
			node = n
			delete(s.known, n)
			break
		}
	}
	s.mu.Unlock()
	if node != "" {
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
	s.mu.Lock()
	if _, ok := s.received[name]; !ok {
		s.received[name] = s.cfg.Clock.Now()
	}
	s.mu.Unlock()
	s.queue.Add(name)
	s.notify()
}

func (s *Session) watchError(ctx context.Context, r *cache.Reflector, err error) {
	cache.DefaultWatchErrorHandler(ctx, r, err)
	c := classify(err)
	if c.Reason != fleetv1.ReasonForbidden && c.Reason != fleetv1.ReasonUnauthorized {
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
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.probeLoop(ctx) })
	wg.Go(func() { s.notifyLoop(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		s.queue.ShutDown()
	})

	if err := wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 1 << 30, Cap: 30 * time.Second},
		func(ctx context.Context) (bool, error) {
			if err := s.seed(ctx); err != nil {
				s.log.Error(err, "Cannot list the cluster's NodeSnapshots on the hub; retrying")
				return false, nil
			}
			return true, nil
		}); err != nil {
		return // cancelled
	}
	wg.Go(func() { s.informer.RunWithContext(ctx) })
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
	var vanished []string
	for name := range s.known {
		if _, exists, _ := s.informer.GetStore().GetByKey(name); !exists {
			vanished = append(vanished, name)
		}
	}
	s.mu.Unlock()
	for _, name := range vanished {
		s.queue.Add(name)
	}
	if err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.queue.Len() == 0 && s.inflight.Load() == 0 && len(s.retrying) == 0, nil
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

// seed learns which snapshots of this cluster the hub holds, from one
// paginated metadata-only list.
func (s *Session) seed(ctx context.Context) error {
	known := map[string]written{}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	opts := []client.ListOption{
		client.InNamespace(s.cfg.Cluster.Namespace),
		client.MatchingLabels{fleetv1.ClusterLabel: s.cfg.Cluster.Name},
		client.Limit(500),
	}
	for {
		if err := s.cfg.HubReader.List(ctx, list, opts...); err != nil {
			return err
		}
		for i := range list.Items {
			m := &list.Items[i]
			node, err := s.nodeNameOf(ctx, m)
			if err != nil {
				return err
			}
			known[node] = written{name: m.Name, digest: m.Annotations[fleetv1.DigestAnnotation], resourceVersion: m.ResourceVersion}
		}
		if list.Continue == "" {
			break
		}
		opts = append(opts[:3:3], client.Continue(list.Continue))
	}
	s.mu.Lock()
	s.known = known
	s.metrics.nodes.Set(float64(len(known)))
	s.mu.Unlock()
	return nil
}

// nodeNameOf is the member node a snapshot mirrors. Its name cannot tell:
// a hashed fallback name can read like "<cluster>.<another node>". Snapshots
// written before the node-name annotation existed are read once in full.
func (s *Session) nodeNameOf(ctx context.Context, m *metav1.PartialObjectMetadata) (string, error) {
	if node := m.Annotations[fleetv1.NodeNameAnnotation]; node != "" {
		return node, nil
	}
	snap := &fleetv1.NodeSnapshot{}
	if err := s.cfg.HubReader.Get(ctx, client.ObjectKeyFromObject(m), snap); err != nil {
		return "", err
	}
	return snap.Spec.NodeName, nil
}

func (s *Session) processNext(ctx context.Context) bool {
	name, quit := s.queue.Get()
	if quit {
		return false
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	defer s.queue.Done(name)
	err := s.sync(ctx, name)
	s.mu.Lock()
	if err != nil {
		s.retrying[name] = struct{}{}
	} else {
		delete(s.retrying, name)
	}
	s.mu.Unlock()
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

// sync makes the hub's snapshot of one node match the informer's view of it.
func (s *Session) sync(ctx context.Context, node string) error {
	obj, exists, err := s.informer.GetStore().GetByKey(node)
	if err != nil {
		return err
	}
	s.mu.Lock()
	have, ok := s.known[node]
	s.mu.Unlock()

	if !exists {
		if !ok {
			s.written(node, nil)
			return nil
		}
		snap := &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: have.name, Namespace: s.cfg.Cluster.Namespace}}
		if err := s.cfg.Hub.Delete(ctx, snap); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		s.metrics.deletes.Inc()
		s.written(node, nil)
		return nil
	}

	m := obj.(*mirroredNode)
	if ok && have.digest == m.digest {
		s.metrics.skipped.Inc()
		s.mu.Lock()
		delete(s.received, node)
		s.mu.Unlock()
		return nil
	}
	status, digest := m.pending.Load(), m.digest
	if status == nil {
		// Written once, then lost on the hub (see Forget): the projection
		// is gone from memory, so read the node once more.
		n, err := s.nodes.Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil // its delete event is on the way
		} else if err != nil {
			return err
		}
		st := projection.Project(n, s.cfg.Filter)
		status, digest = &st, projection.Digest(&st)
	}
	snap := s.snapshot(node, *status, digest)
	if !ok {
		err = s.cfg.Hub.Create(ctx, snap)
		if err == nil {
			s.metrics.creates.Inc()
		}
	} else {
		snap.Name, snap.ResourceVersion = have.name, have.resourceVersion
		err = s.cfg.Hub.Update(ctx, snap)
		if err == nil {
			s.metrics.updates.Inc()
		}
	}
	switch {
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err), apierrors.IsNotFound(err):
		// The hub holds something other than we thought: learn what, then retry.
		if rerr := s.refresh(ctx, node, snap.Name); rerr != nil {
			return rerr
		}
		return err
	case err != nil:
		return err
	}
	s.written(node, &written{name: snap.Name, digest: digest, resourceVersion: snap.ResourceVersion})
	m.pending.CompareAndSwap(status, nil)
	return nil
}

// written records what the hub now holds for a node (nil: nothing) and
// observes the propagation lag of the change.
func (s *Session) written(node string, w *written) {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if w == nil {
		delete(s.known, node)
	} else {
		s.known[node] = *w
	}
	if t, ok := s.received[node]; ok {
		s.metrics.lag.Observe(now.Sub(t).Seconds())
		delete(s.received, node)
	}
	s.metrics.nodes.Set(float64(len(s.known)))
}

func (s *Session) refresh(ctx context.Context, node, name string) error {
	snap := &metav1.PartialObjectMetadata{}
	snap.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshot"))
	err := s.cfg.HubReader.Get(ctx, types.NamespacedName{Namespace: s.cfg.Cluster.Namespace, Name: name}, snap)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case apierrors.IsNotFound(err):
		delete(s.known, node)
	case err != nil:
		return err
	default:
		s.known[node] = written{name: name, digest: snap.Annotations[fleetv1.DigestAnnotation], resourceVersion: snap.ResourceVersion}
	}
	return nil
}

func (s *Session) snapshot(node string, status fleetv1.NodeSnapshotStatus, digest string) *fleetv1.NodeSnapshot {
	return &fleetv1.NodeSnapshot{
		ObjectMeta: metav1.ObjectMeta{
			Name:            projection.SnapshotName(s.cfg.Cluster.Name, node),
			Namespace:       s.cfg.Cluster.Namespace,
			Labels:          map[string]string{fleetv1.ClusterLabel: s.cfg.Cluster.Name},
			Annotations:     map[string]string{fleetv1.DigestAnnotation: digest, fleetv1.NodeNameAnnotation: node},
			OwnerReferences: []metav1.OwnerReference{s.cfg.Owner},
		},
		Spec:   fleetv1.NodeSnapshotSpec{ClusterName: s.cfg.Cluster.Name, NodeName: node},
		Status: status,
	}
}

func (s *Session) probeLoop(ctx context.Context) {
	h := hysteresis{threshold: s.cfg.Probe.FailureThreshold}
	ticker := s.cfg.Clock.NewTicker(s.cfg.Probe.Interval)
	defer ticker.Stop()
	for {
		seen := probe(ctx, s.rest, s.cfg.Probe.Timeout)
		if ctx.Err() != nil {
			return
		}
		reported := h.observe(seen)
		s.mu.Lock()
		wasHealthy := s.probed.Status == metav1.ConditionTrue
		changed := s.probed != reported
		s.probed = reported
		s.mu.Unlock()
		if reported.Status == metav1.ConditionTrue && !wasHealthy {
			// (Re)connected: the member may have been upgraded meanwhile.
			if v, err := s.serverVersion(ctx); err == nil {
				s.mu.Lock()
				changed = changed || s.version != v
				s.version = v
				s.mu.Unlock()
			}
		}
		if changed {
			s.log.Info("Member connection changed", "status", reported.Status, "reason", reported.Reason, "message", reported.Message)
			s.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
	}
}

func (s *Session) serverVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Probe.Timeout)
	defer cancel()
	body, err := s.rest.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", err
	}
	var info version.Info
	if err := json.Unmarshal(body, &info); err != nil {
		return "", err
	}
	return info.GitVersion, nil
}

func (s *Session) notifyLoop(ctx context.Context) {
	var last *Status
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
		}
		st := s.Status()
		if last == nil || !equality.Semantic.DeepEqual(*last, st) {
			last = &st
			s.cfg.OnChange(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(s.cfg.NotifyInterval):
		}
	}
}
