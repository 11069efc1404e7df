package managedcluster

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/projection"
	"github.com/nodemirror/nodemirror/internal/session"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// CacheOptions are the manager cache options the operator needs: the
// cache keeps metadata of the Secrets marked as member kubeconfigs only,
// and no managedFields. Secret annotations are dropped too:
// last-applied-configuration would carry the Secret's data. NodeSnapshots
// are not cached at all: each session watches its own cluster's (see
// session.Config.HubMetadata), so that an operator replica holds only the
// snapshots of the clusters it owns.
func CacheOptions() cache.Options {
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {
				Label: labels.SelectorFromSet(labels.Set{fleetv1.KubeconfigSecretLabel: "true"}),
				Transform: func(obj any) (any, error) {
					if m, ok := obj.(metav1.Object); ok {
						m.SetManagedFields(nil)
						m.SetAnnotations(nil)
					}
					return obj, nil
				},
			},
		},
	}
}

// secretRefField indexes ManagedClusters by the Secret they read.
const secretRefField = "spec.kubeconfigSecretRef.name"

// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=managedclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=managedclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=managedclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=fleet.nodemirror.io,resources=nodesnapshots,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconciler runs one session per ManagedCluster.
type Reconciler struct {
	// Client reads ManagedClusters from the cache and writes to the hub.
	Client client.Client
	// APIReader reads Secrets and NodeSnapshots without a cache.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Policy says which kubeconfigs are accepted.
	Policy member.Policy
	// MemberQPS and MemberBurst limit each member client.
	MemberQPS   float32
	MemberBurst int
	// WriteBudget gives each cluster its share of the hub write budget.
	WriteBudget *session.WriteBudget
	// WriteGate bounds the hub writes in flight and shares them between
	// clusters.
	WriteGate *session.WriteGate
	// MaxNodesPerCluster caps each cluster's snapshots (0: no cap).
	MaxNodesPerCluster int
	// Probe, Workers and NotifyInterval tune every session.
	Probe          session.ProbeOptions
	Workers        int
	NotifyInterval time.Duration
	// MaxConcurrent ManagedClusters are reconciled at once.
	MaxConcurrent int
	// CredentialWarning is how long ahead of a member credential's expiry
	// the cluster says so (condition CredentialExpiring, a Warning Event).
	CredentialWarning time.Duration
	// Shard, when set, shares the ManagedClusters with other replicas:
	// this one runs, patches and finalizes only the clusters it owns, and
	// writes nothing (snapshots, status, Events) for the others. Nil: all
	// of them are this replica's.
	Shard *shard.Membership

	sessions sessions
	// hubMetadata watches the sessions' own snapshots.
	hubMetadata metadata.Interface
	base        context.Context
	changes     chan event.GenericEvent
}

// SetupWithManager registers the controller. Sessions run until ctx ends
// or the manager stops, whichever comes first.
func (r *Reconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	var err error
	if r.hubMetadata, err = metadata.NewForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient()); err != nil {
		return err
	}
	var cancel context.CancelFunc
	r.base, cancel = context.WithCancel(ctx)
	r.changes = make(chan event.GenericEvent)
	if r.Shard != nil {
		r.Shard.AddKeyspace(r.shardKeyspace())
	}
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		<-ctx.Done()
		cancel()
		r.sessions.stopAll()
		return nil
	})); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &fleetv1.ManagedCluster{}, secretRefField, func(o client.Object) []string {
		return []string{o.(*fleetv1.ManagedCluster).Spec.KubeconfigSecretRef.Name}
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&fleetv1.ManagedCluster{}).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clustersReading), builder.OnlyMetadata).
		WatchesRawSource(source.Channel(r.changes, &handler.EnqueueRequestForObject{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrent}).
		Complete(r)
}

// clustersReading maps a Secret to the ManagedClusters that read it.
func (r *Reconciler) clustersReading(ctx context.Context, secret client.Object) []reconcile.Request {
	var list fleetv1.ManagedClusterList
	if err := r.Client.List(ctx, &list, client.InNamespace(secret.GetNamespace()), client.MatchingFields{secretRefField: secret.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Cannot list ManagedClusters reading Secret", "secret", klog.KObj(secret))
		return nil
	}
	reqs := make([]reconcile.Request, len(list.Items))
	for i := range list.Items {
		reqs[i].NamespacedName = client.ObjectKeyFromObject(&list.Items[i])
	}
	return reqs
}

// Reconcile brings a ManagedCluster's session and status in line with its spec.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	// The hold lasts the whole reconcile, status patch included, so that
	// the cluster is released (and so started elsewhere) only after.
	owned, unlock := r.holdCluster(req.NamespacedName)
	defer unlock()
	if !owned {
		// Another replica's: its session there, its status, its Events.
		// A session could only be left here by a bug, but stopping it
		// costs nothing.
		if r.sessions.stop(req.NamespacedName) {
			ctrl.LoggerFrom(ctx).Info("Not this replica's cluster: stopped its session")
		}
		return ctrl.Result{}, nil
	}
	mc := &fleetv1.ManagedCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, mc); err != nil {
		if apierrors.IsNotFound(err) {
			r.sessions.stop(req.NamespacedName)
			forgetClusterMetrics(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !mc.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, mc)
	}
	if !controllerutil.ContainsFinalizer(mc, fleetv1.ManagedClusterFinalizer) {
		orig := mc.DeepCopy()
		controllerutil.AddFinalizer(mc, fleetv1.ManagedClusterFinalizer)
		if err := r.Client.Patch(ctx, mc, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, err
		}
	}

	before := mc.DeepCopy()
	var obs observation
	now := time.Now()
	defer func() {
		setStatus(mc, obs, now, r.CredentialWarning)
		recordConditions(mc)
		if err := r.patchStatus(ctx, before, mc); err != nil {
			reterr = kerrors.NewAggregate([]error{reterr, err})
		}
	}()
	var err error
	obs, err = r.reconcileNormal(ctx, mc)
	if err != nil || obs.session == nil {
		return ctrl.Result{}, err
	}
	// The credential's expiry moves the condition with no event to wake
	// the controller: come back when it does.
	return ctrl.Result{RequeueAfter: credentialRecheck(&obs.credential, now, r.CredentialWarning)}, nil
}

func (r *Reconciler) reconcileNormal(ctx context.Context, mc *fleetv1.ManagedCluster) (observation, error) {
	key := client.ObjectKeyFromObject(mc)
	if mc.Spec.Paused {
		if r.sessions.stop(key) {
			ctrl.LoggerFrom(ctx).Info("Paused: stopped watching the member cluster, snapshots kept")
		}
		return observation{paused: true}, nil
	}
	current, ok := r.sessions.get(key)
	version, err := r.inputVersion(ctx, mc)
	if err != nil {
		return observation{}, err
	}
	if ok && version.secretRevision != "" && current.version == version {
		// Nothing changed since the session started: no Secret read.
		st := current.session.Status()
		return observation{session: &st, credential: current.credential}, nil
	}
	in, err := r.memberInput(ctx, mc)
	if refusal := (*member.Refusal)(nil); errors.As(err, &refusal) {
		// Terminal until the Secret or the spec changes, and both are
		// watched: no requeue, no hot loop.
		r.sessions.stop(key)
		recordCredential(key, fleetv1.MemberCredential{})
		return observation{refusal: refusal}, nil
	} else if err != nil {
		return observation{}, err
	}
	if !ok || current.hash != in.hash {
		if ok {
			ctrl.LoggerFrom(ctx).Info("Spec or credentials changed: restarting session")
			r.sessions.stop(key)
			sessionRestarts.WithLabelValues(key.Namespace, key.Name).Inc()
		}
		s, err := session.Start(r.base, session.Config{
			Cluster:        key,
			Owner:          *metav1.NewControllerRef(mc, fleetv1.GroupVersion.WithKind("ManagedCluster")),
			Member:         in.config,
			Selector:       in.selector,
			Filter:         projection.NewFilter(mc.Spec.Mirror),
			Resync:         resyncPeriod(mc),
			Hub:            r.Client,
			HubReader:      r.APIReader,
			HubMetadata:    r.hubMetadata,
			Probe:          r.Probe,
			MaxNodes:       r.MaxNodesPerCluster,
			WriteBudget:    r.WriteBudget,
			WriteGate:      r.WriteGate,
			Workers:        r.Workers,
			NotifyInterval: r.NotifyInterval,
			OnChange:       r.onSessionChange(key.Namespace, key.Name),
			Log:            ctrl.Log.WithName("session"),
		})
		if err != nil {
			return observation{}, err
		}
		current = running{session: s, hash: in.hash, config: in.config}
	}
	current.version, current.credential = version, in.credential
	r.sessions.put(key, current)
	recordCredential(key, in.credential)
	st := current.session.Status()
	return observation{session: &st, credential: in.credential}, nil
}

// inputVersion reads the Secret's resourceVersion from the metadata cache.
// A Secret that is not there gives an empty revision.
func (r *Reconciler) inputVersion(ctx context.Context, mc *fleetv1.ManagedCluster) (inputVersion, error) {
	secret := &metav1.PartialObjectMetadata{}
	secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	v := inputVersion{uid: mc.UID, generation: mc.Generation}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: mc.Namespace, Name: mc.Spec.KubeconfigSecretRef.Name}, secret)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return v, err
	default:
		v.secretRevision = secret.ResourceVersion
	}
	return v, nil
}

func resyncPeriod(mc *fleetv1.ManagedCluster) time.Duration {
	if mc.Spec.ResyncPeriod == nil || mc.Spec.ResyncPeriod.Duration <= 0 {
		return 30 * time.Minute
	}
	return mc.Spec.ResyncPeriod.Duration
}

func (r *Reconciler) log() logr.Logger { return ctrl.Log.WithName("managedcluster") }

// onSessionChange returns the callback through which a session asks for its
// ManagedCluster to be reconciled (and so its status refreshed).
func (r *Reconciler) onSessionChange(namespace, name string) func(context.Context) {
	return func(ctx context.Context) {
		obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		select {
		case r.changes <- event.GenericEvent{Object: obj}:
		case <-ctx.Done():
		}
	}
}

func (r *Reconciler) reconcileDelete(ctx context.Context, mc *fleetv1.ManagedCluster) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(mc, fleetv1.ManagedClusterFinalizer) {
		return ctrl.Result{}, nil
	}
	r.sessions.stop(client.ObjectKeyFromObject(mc))
	forgetClusterMetrics(client.ObjectKeyFromObject(mc))
	ofCluster := []client.DeleteAllOfOption{
		client.InNamespace(mc.Namespace),
		client.MatchingLabels{fleetv1.ClusterLabel: mc.Name},
	}
	if err := r.Client.DeleteAllOf(ctx, &fleetv1.NodeSnapshot{}, ofCluster...); err != nil {
		return ctrl.Result{}, err
	}
	left := &metav1.PartialObjectMetadataList{}
	left.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	if err := r.APIReader.List(ctx, left, client.InNamespace(mc.Namespace), client.MatchingLabels{fleetv1.ClusterLabel: mc.Name}, client.Limit(1)); err != nil {
		return ctrl.Result{}, err
	}
	if len(left.Items) > 0 {
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	orig := mc.DeepCopy()
	controllerutil.RemoveFinalizer(mc, fleetv1.ManagedClusterFinalizer)
	ctrl.LoggerFrom(ctx).Info("Stopped session and removed NodeSnapshots")
	return ctrl.Result{}, r.Client.Patch(ctx, mc, client.MergeFrom(orig))
}

func (r *Reconciler) patchStatus(ctx context.Context, before, after *fleetv1.ManagedCluster) error {
	if equality.Semantic.DeepEqual(before.Status, after.Status) {
		return nil
	}
	r.recordEvents(before, after)
	err := r.Client.Status().Patch(ctx, after, client.MergeFrom(before))
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
