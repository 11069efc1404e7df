package nodeoperation

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/source"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// Members gives a cluster's member access; *managedcluster.Reconciler is one.
type Members interface {
	Member(ctx context.Context, key types.NamespacedName) (managedcluster.MemberAccess, error)
}

// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=nodeoperations,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=nodeoperations/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=nodeoperations/finalizers,verbs=update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler runs NodeOperations. Each running operation has a run of
// its own, outside the reconcile loop; Reconcile starts, stops and
// finishes runs, and deletes finished operations past their TTL.
type Reconciler struct {
	// Client reads NodeOperations and ManagedClusters from the cache and
	// writes to the hub.
	Client client.Client
	// APIReader lists NodeSnapshots' metadata without a cache.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Members gives each cluster's member access.
	Members Members
	// StatusInterval is the most often a run writes its status, but on a
	// phase change (default 500ms).
	StatusInterval time.Duration
	// ClusterWait is how long a run waits for a cluster that is not
	// connected yet (e.g. just after the operator started) before its
	// nodes are skipped (default 30s). A paused or unknown cluster is
	// not waited for.
	ClusterWait time.Duration
	// EvictionBackoff caps the wait between retries of evictions a
	// PodDisruptionBudget refused (default 5s, as kubectl drain waits).
	EvictionBackoff time.Duration
	// MaxConcurrent NodeOperations are reconciled at once (default 2).
	MaxConcurrent int
	// MemberQPS and MemberBurst limit one operation's requests to one
	// member (0: the session's own limits, which are sized for one watch
	// and its probes, not for acting on many nodes).
	MemberQPS   float32
	MemberBurst int
	// Shard, when set, shares the NodeOperations with other replicas:
	// this one runs, finalizes and expires only those it owns. Nil: all
	// of them are this replica's.
	Shard *shard.Membership

	base     context.Context
	runs     runs
	acquired chan event.GenericEvent
}

// SetupWithManager registers the controller. Runs end when ctx ends or
// the manager stops.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if r.StatusInterval <= 0 {
		r.StatusInterval = 500 * time.Millisecond
	}
	if r.ClusterWait <= 0 {
		r.ClusterWait = 30 * time.Second
	}
	if r.EvictionBackoff <= 0 {
		r.EvictionBackoff = 5 * time.Second
	}
	if r.MaxConcurrent <= 0 {
		r.MaxConcurrent = 2
	}
	var cancel context.CancelFunc
	r.base, cancel = context.WithCancel(ctx)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		cancel()
		r.runs.stopAll()
		return nil
	})); err != nil {
		return err
	}
	r.acquired = make(chan event.GenericEvent)
	if r.Shard != nil {
		r.Shard.AddKeyspace(r.shardKeyspace())
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&fleetv1.NodeOperation{}).
		WatchesRawSource(source.Channel(r.acquired, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrent}).
		Complete(r)
}

// Reconcile starts the operation's run, stops it when the operation is
// deleted, and deletes a finished operation once its TTL has passed.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	// Held for the reconcile only: the run itself is stopped by the
	// keyspace's Release before the operation is let go.
	owned, unlock := r.holdOperation(req.NamespacedName)
	defer unlock()
	if !owned {
		r.runs.stop(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	op := &fleetv1.NodeOperation{}
	if err := r.Client.Get(ctx, req.NamespacedName, op); err != nil {
		if apierrors.IsNotFound(err) {
			r.runs.stop(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !op.DeletionTimestamp.IsZero() {
		// Stop the steps in flight, start no new ones; what is done stays.
		if r.runs.stop(req.NamespacedName) {
			ctrl.LoggerFrom(ctx).Info("Deleted while running: stopped")
		}
		if !controllerutil.ContainsFinalizer(op, fleetv1.NodeOperationFinalizer) {
			return ctrl.Result{}, nil
		}
		orig := op.DeepCopy()
		controllerutil.RemoveFinalizer(op, fleetv1.NodeOperationFinalizer)
		return ctrl.Result{}, client.IgnoreNotFound(r.Client.Patch(ctx, op, client.MergeFrom(orig)))
	}
	if finished(op.Status.Phase) {
		return r.expire(ctx, op)
	}
	if !controllerutil.ContainsFinalizer(op, fleetv1.NodeOperationFinalizer) {
		orig := op.DeepCopy()
		controllerutil.AddFinalizer(op, fleetv1.NodeOperationFinalizer)
		if err := r.Client.Patch(ctx, op, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, err
		}
	}
	r.runs.start(r.base, req.NamespacedName, op.UID, func(ctx context.Context) { r.run(ctx, op.DeepCopy()) })
	return ctrl.Result{}, nil
}

func finished(phase string) bool {
	return phase == fleetv1.OperationSucceeded || phase == fleetv1.OperationFailed
}

// expire deletes a finished operation ttlSecondsAfterFinished after its
// completion, or says when to come back.
func (r *Reconciler) expire(ctx context.Context, op *fleetv1.NodeOperation) (ctrl.Result, error) {
	if op.Spec.TTLSecondsAfterFinished == nil || op.Status.CompletionTime == nil {
		return ctrl.Result{}, nil
	}
	at := op.Status.CompletionTime.Add(time.Duration(*op.Spec.TTLSecondsAfterFinished) * time.Second)
	if wait := time.Until(at); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	uid := op.UID
	err := r.Client.Delete(ctx, op, client.Preconditions{UID: &uid}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if err == nil {
		ctrl.LoggerFrom(ctx).Info("Deleted: ttlSecondsAfterFinished passed")
	}
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// run is one operation's execution, from its status as read (results
// already terminal are kept, not redone) to its end.
func (r *Reconciler) run(ctx context.Context, op *fleetv1.NodeOperation) {
	log := ctrl.Log.WithName("nodeoperation").WithValues("NodeOperation", client.ObjectKeyFromObject(op))
	t := newTracker(r, op)
	if op.Status.Phase == "" {
		t.pending()
		r.event(op, corev1.EventTypeNormal, "Started", "Start", "%s started", op.Spec.Action)
	} else {
		log.Info("Resuming", "phase", op.Status.Phase)
	}
	var targets []clusterTarget
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		var err error
		if targets, err = r.resolve(ctx, op); err == nil {
			break
		}
		log.Error(err, "Cannot resolve targets; retrying")
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	t.setTargets(targets)
	if !t.flush(ctx) {
		return
	}
	stopFlusher := t.flushEvery(ctx, r.StatusInterval)
	var wg sync.WaitGroup
	for _, ct := range targets {
		if ct.missing || len(ct.nodes) == 0 {
			continue
		}
		wg.Go(func() { r.runCluster(ctx, op, t, ct) })
	}
	wg.Wait()
	stopFlusher()
	if ctx.Err() != nil {
		return
	}
	st := t.finish()
	for delay := 200 * time.Millisecond; !t.flush(ctx); delay = min(2*delay, 10*time.Second) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
	kind := corev1.EventTypeNormal
	if st.Phase == fleetv1.OperationFailed {
		kind = corev1.EventTypeWarning
	}
	c := st.Counts
	r.event(op, kind, st.Phase, "Finish", "%s %s: %d nodes, %d succeeded, %d failed, %d skipped", op.Spec.Action, st.Phase, c.Total, c.Succeeded, c.Failed, c.Skipped)
	log.Info("Finished", "phase", st.Phase, "total", c.Total, "succeeded", c.Succeeded, "failed", c.Failed, "skipped", c.Skipped)
}

// runCluster acts on one cluster's nodes, at most spec.maxConcurrent at once.
func (r *Reconciler) runCluster(ctx context.Context, op *fleetv1.NodeOperation, t *tracker, ct clusterTarget) {
	todo := t.todo(ct.name, ct.nodes)
	if len(todo) == 0 {
		return
	}
	access, ok := r.waitMember(ctx, types.NamespacedName{Namespace: op.Namespace, Name: ct.name})
	if !ok {
		return
	}
	if access.State != managedcluster.MemberReady {
		reason := map[managedcluster.MemberState]string{
			managedcluster.MemberPaused:       fleetv1.ReasonClusterPaused,
			managedcluster.MemberDisconnected: fleetv1.ReasonClusterDisconnected,
			managedcluster.MemberUnknown:      fleetv1.ReasonClusterNotFound,
		}[access.State]
		if reason == "" {
			reason = fleetv1.ReasonClusterNotReady
		}
		phase := fleetv1.OperationSkipped
		if reason == fleetv1.ReasonClusterNotFound {
			phase = fleetv1.OperationFailed
		}
		msg := fmt.Sprintf("cluster %s cannot be acted on: %s (%s)", ct.name, access.Message, access.Reason)
		for _, n := range todo {
			t.end(ct.name, n.node, outcome{phase, reason, msg})
		}
		return
	}
	if r.MemberQPS > 0 {
		access.Config.QPS, access.Config.Burst = r.MemberQPS, r.MemberBurst
	}
	cs, err := kubernetes.NewForConfig(access.Config)
	if err != nil {
		for _, n := range todo {
			t.end(ct.name, n.node, failed(fleetv1.ReasonClusterNotReady, "member client: %v", err))
		}
		return
	}
	a := &actor{cs: cs, spec: &op.Spec, evictionBackoff: r.EvictionBackoff,
		progress: func(node, msg string) { t.progress(ct.name, node, msg) }}
	limit := int(op.Spec.MaxConcurrent)
	if limit <= 0 {
		limit = 5
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for _, n := range todo {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			started := t.begin(ct.name, n.node, n.started)
			res := a.act(ctx, n.node, started)
			if ctx.Err() != nil {
				// Stopped: the step is redone (idempotently) on resume.
				return
			}
			t.end(ct.name, n.node, res)
		})
	}
	wg.Wait()
}

// waitMember returns the cluster's member access, waiting up to
// ClusterWait for a cluster that is not connected yet. false: ctx ended.
func (r *Reconciler) waitMember(ctx context.Context, key types.NamespacedName) (managedcluster.MemberAccess, bool) {
	deadline := time.Now().Add(r.ClusterWait)
	for {
		access, err := r.Members.Member(ctx, key)
		if err == nil {
			switch access.State {
			case managedcluster.MemberReady, managedcluster.MemberPaused, managedcluster.MemberUnknown:
				return access, true
			}
			if time.Now().After(deadline) {
				return access, true
			}
		}
		select {
		case <-ctx.Done():
			return access, false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (r *Reconciler) event(op *fleetv1.NodeOperation, kind, reason, action, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(op, nil, kind, reason, action, format, args...)
	}
}

// patchStatus writes the whole status with a merge patch on the status
// subresource, without a resourceVersion: the run is its only writer.
func (r *Reconciler) patchStatus(ctx context.Context, op *fleetv1.NodeOperation, st fleetv1.NodeOperationStatus) error {
	raw, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return err
	}
	target := &fleetv1.NodeOperation{ObjectMeta: metav1.ObjectMeta{Namespace: op.Namespace, Name: op.Name}}
	return r.Client.Status().Patch(ctx, target, client.RawPatch(types.MergePatchType, raw))
}

// runs are the operations being run, by key; an ended run stays until its
// operation is gone, so that a reconcile that still reads the old status
// from the cache does not start it again.
type runs struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*runHandle
}

type runHandle struct {
	uid    types.UID
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *runs) start(base context.Context, key types.NamespacedName, uid types.UID, f func(context.Context)) {
	s.mu.Lock()
	if h, ok := s.m[key]; ok {
		if h.uid == uid {
			s.mu.Unlock()
			return
		}
		// Another operation of the same name: the old one is gone.
		h.cancel()
	}
	if s.m == nil {
		s.m = map[types.NamespacedName]*runHandle{}
	}
	ctx, cancel := context.WithCancel(base)
	h := &runHandle{uid: uid, cancel: cancel, done: make(chan struct{})}
	s.m[key] = h
	s.mu.Unlock()
	go func() {
		defer close(h.done)
		f(ctx)
	}()
}

// stop cancels the operation's run and waits for its steps in flight to
// end. It says whether a run was still going.
func (s *runs) stop(key types.NamespacedName) bool {
	s.mu.Lock()
	h, ok := s.m[key]
	delete(s.m, key)
	s.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-h.done:
		return false
	default:
	}
	h.cancel()
	<-h.done
	return true
}

func (s *runs) stopAll() {
	s.mu.Lock()
	all := s.m
	s.m = nil
	s.mu.Unlock()
	for _, h := range all {
		h.cancel()
	}
	for _, h := range all {
		<-h.done
	}
}
