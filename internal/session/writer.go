package session

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/projection"
)

// writer makes one cluster's NodeSnapshots on the hub match its nodes as
// the session's informer holds them. It remembers what the hub holds per
// node, so that a node whose digest has not moved costs no hub request.
type writer struct {
	cluster   types.NamespacedName
	owner     metav1.OwnerReference
	filter    projection.Filter
	hub       client.Client
	hubReader client.Reader
	// node returns the informer's view of a member node.
	node func(name string) (*mirroredNode, bool, error)
	// getNode reads a member node itself, for a snapshot the hub lost after
	// its projection was dropped from memory.
	getNode func(ctx context.Context, name string) (*corev1.Node, error)
	metrics *clusterMetrics
	clock   clock.PassiveClock
	// budget paces this cluster's hub writes (nil: not paced).
	budget *WriteBudget
	// gate bounds the writes in flight across clusters (nil: not bounded).
	gate *WriteGate
	// maxNodes caps the snapshots of the cluster (0: no cap); requeue
	// hands a node back to the queue when a place frees up, and
	// capChanged tells the session that the count left out changed.
	maxNodes   int
	requeue    func(node string)
	capChanged func()

	// mu guards the maps below. Workers change them as they write; the
	// informer's transform, the enqueue handler and the session's sync
	// check read them.
	mu sync.Mutex
	// onHub is, per node name, the snapshot the hub holds.
	onHub map[string]hubSnapshot
	// pendingSince is, per node name, when its oldest change not yet
	// written arrived: the start of its propagation lag.
	pendingSince map[string]time.Time
	// failing holds the nodes whose last write failed and will be retried.
	failing map[string]struct{}
	// overCap holds the nodes left unmirrored because the cluster has
	// maxNodes snapshots already; creating counts creates in flight,
	// which take a place before they land.
	overCap  map[string]struct{}
	creating int
}

// hubSnapshot is what the writer knows of a snapshot on the hub.
type hubSnapshot struct {
	name            string
	digest          string
	resourceVersion string
}

// newWriter completes a writer whose dependencies are set.
func newWriter(w *writer) *writer {
	w.onHub = map[string]hubSnapshot{}
	w.pendingSince = map[string]time.Time{}
	w.failing = map[string]struct{}{}
	w.overCap = map[string]struct{}{}
	return w
}

// seed learns which snapshots of this cluster the hub holds, from one
// paginated metadata-only list, and returns the list's resourceVersion.
func (w *writer) seed(ctx context.Context) (string, error) {
	onHub, rv, err := w.listHub(ctx)
	if err != nil {
		return "", err
	}
	w.mu.Lock()
	w.onHub = onHub
	w.metrics.nodes.Set(float64(len(onHub)))
	w.mu.Unlock()
	return rv, nil
}

// missing lists the snapshots the writer believes on the hub that a fresh
// list no longer has (someone deleted them while nobody watched), and
// returns the list's resourceVersion.
func (w *writer) missing(ctx context.Context) ([]string, string, error) {
	listed, rv, err := w.listHub(ctx)
	if err != nil {
		return nil, "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var gone []string
	for node, h := range w.onHub {
		if _, ok := listed[node]; !ok {
			gone = append(gone, h.name)
		}
	}
	return gone, rv, nil
}

// listHub reads the cluster's snapshots on the hub, per node.
func (w *writer) listHub(ctx context.Context) (map[string]hubSnapshot, string, error) {
	onHub := map[string]hubSnapshot{}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	opts := []client.ListOption{
		client.InNamespace(w.cluster.Namespace),
		client.MatchingLabels{fleetv1.ClusterLabel: w.cluster.Name},
		client.Limit(500),
	}
	for {
		if err := w.hubReader.List(ctx, list, opts...); err != nil {
			return nil, "", err
		}
		for i := range list.Items {
			m := &list.Items[i]
			node, err := w.nodeNameOf(ctx, m)
			if err != nil {
				return nil, "", err
			}
			onHub[node] = hubSnapshot{name: m.Name, digest: m.Annotations[fleetv1.DigestAnnotation], resourceVersion: m.ResourceVersion}
		}
		if list.Continue == "" {
			return onHub, list.ResourceVersion, nil
		}
		opts = append(opts[:3:3], client.Continue(list.Continue))
	}
}

// nodeNameOf is the member node a snapshot mirrors. Its name cannot tell:
// a hashed fallback name can read like "<cluster>.<another node>". Snapshots
// written before the node-name annotation existed are read once in full.
func (w *writer) nodeNameOf(ctx context.Context, m *metav1.PartialObjectMetadata) (string, error) {
	if node := m.Annotations[fleetv1.NodeNameAnnotation]; node != "" {
		return node, nil
	}
	snap := &fleetv1.NodeSnapshot{}
	if err := w.hubReader.Get(ctx, client.ObjectKeyFromObject(m), snap); err != nil {
		return "", err
	}
	return snap.Spec.NodeName, nil
}

// holds reports whether the hub's snapshot of node is at digest.
func (w *writer) holds(node, digest string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.onHub[node].digest == digest
}

// changed notes that node changed on the member, for the propagation lag.
func (w *writer) changed(node string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pendingSince[node]; !ok {
		w.pendingSince[node] = w.clock.Now()
	}
}

// lost forgets the snapshot the hub no longer holds (someone deleted it)
// and returns the node it mirrored, to be written again.
func (w *writer) lost(snapshotName string) (string, bool) {
	var freed string
	defer func() { w.placeFreed(freed) }()
	w.mu.Lock()
	defer w.mu.Unlock()
	for node, h := range w.onHub {
		if h.name == snapshotName {
			freed = w.forgetLocked(node)
			return node, true
		}
	}
	return "", false
}

// forgetLocked drops what the hub held for node. When that frees a place
// under the node cap, it returns a node left out to take it.
func (w *writer) forgetLocked(node string) (freed string) {
	if _, had := w.onHub[node]; !had {
		return ""
	}
	delete(w.onHub, node)
	for n := range w.overCap {
		delete(w.overCap, n)
		return n
	}
	return ""
}

// placeFreed hands a node left out back to the queue; call it unlocked.
func (w *writer) placeFreed(node string) {
	if node != "" {
		w.requeue(node)
		w.capChanged()
	}
}

// vanished lists the nodes the hub holds a snapshot of but the informer
// does not know: they were deleted while nobody watched.
func (w *writer) vanished() []string {
	w.mu.Lock()
	held := slices.Collect(maps.Keys(w.onHub))
	w.mu.Unlock()
	var out []string
	for _, node := range held {
		if _, exists, _ := w.node(node); !exists {
			out = append(out, node)
		}
	}
	return out
}

// unmirrored is how many nodes are left out by the node cap.
func (w *writer) unmirrored() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.overCap)
}

// settled reports whether no write is waiting for a retry.
func (w *writer) settled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.failing) == 0
}

// sync makes the hub's snapshot of one node match the informer's view of
// it, and remembers whether it must be retried.
func (w *writer) sync(ctx context.Context, node string) error {
	err := w.syncNode(ctx, node)
	w.mu.Lock()
	if err != nil {
		w.failing[node] = struct{}{}
	} else {
		delete(w.failing, node)
	}
	w.mu.Unlock()
	return err
}

func (w *writer) syncNode(ctx context.Context, node string) error {
	m, exists, err := w.node(node)
	if err != nil {
		return err
	}
	w.mu.Lock()
	have, onHub := w.onHub[node]
	full := exists && !onHub && w.maxNodes > 0 && len(w.onHub)+w.creating >= w.maxNodes
	_, wasOut := w.overCap[node]
	if full {
		w.overCap[node] = struct{}{}
	} else {
		delete(w.overCap, node)
	}
	if full != wasOut {
		defer w.capChanged()
	}
	if exists && !onHub && !full {
		w.creating++
		defer func() {
			w.mu.Lock()
			w.creating--
			w.mu.Unlock()
		}()
	}
	w.mu.Unlock()

	if full {
		// Left out until a place frees up: drop the projection, which
		// would otherwise wait in memory; it is read again then.
		m.pending.Store(nil)
		return nil
	}
	if exists && validation.IsDNS1123Subdomain(node) != nil {
		// Only a member that is not a Kubernetes API server sends such a
		// name; the hub would refuse its snapshot on every retry.
		return nil
	}
	if !exists {
		if onHub {
			if err := w.admit(ctx); err != nil {
				return err
			}
			snap := &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: have.name, Namespace: w.cluster.Namespace}}
			err := w.hub.Delete(ctx, snap)
			w.gate.Release()
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			w.metrics.deletes.Inc()
		}
		w.wrote(node, nil)
		return nil
	}
	if onHub && have.digest == m.digest {
		w.metrics.skipped.Inc()
		w.mu.Lock()
		delete(w.pendingSince, node)
		w.mu.Unlock()
		return nil
	}
	status, digest := m.pending.Load(), m.digest
	if status == nil {
		// Written once, then lost on the hub (see lost): the projection
		// is gone from memory, so read the node once more.
		n, err := w.getNode(ctx, node)
		if apierrors.IsNotFound(err) {
			return nil // its delete event is on the way
		} else if err != nil {
			return err
		}
		st := projection.Project(n, w.filter)
		status, digest = &st, projection.Digest(&st)
	}
	snap := w.snapshot(node, *status, digest)
	if err := w.admit(ctx); err != nil {
		return err
	}
	if onHub {
		// The resourceVersion makes the apply conditional: a snapshot
		// changed or replaced behind our back is a conflict, and refresh
		// learns what the hub holds.
		snap.Name, snap.ResourceVersion = have.name, have.resourceVersion
	}
	snap.ResourceVersion, err = w.apply(ctx, snap)
	w.gate.Release()
	switch {
	case err != nil:
	case onHub:
		w.metrics.updates.Inc()
	default:
		w.metrics.creates.Inc()
	}
	switch {
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err), apierrors.IsNotFound(err):
		// The hub holds something other than we thought: learn what, then retry.
		if rerr := w.refresh(ctx, node, snap.Name); rerr != nil {
			return rerr
		}
		return err
	case err != nil:
		return err
	}
	w.wrote(node, &hubSnapshot{name: snap.Name, digest: digest, resourceVersion: snap.ResourceVersion})
	// Keep the projection if a newer one replaced it meanwhile.
	m.pending.CompareAndSwap(status, nil)
	return nil
}

// admit waits for this cluster's turn to write to the hub: its own rate
// budget, then a slot of the shared gate, which the caller releases.
func (w *writer) admit(ctx context.Context) error {
	if err := w.budget.Wait(ctx, w.cluster.String()); err != nil {
		return err
	}
	return w.gate.Acquire(ctx, w.cluster.String())
}

// wrote records what the hub now holds for a node (nil: nothing) and
// observes the propagation lag of the change.
func (w *writer) wrote(node string, h *hubSnapshot) {
	now := w.clock.Now()
	var freed string
	defer func() { w.placeFreed(freed) }()
	w.mu.Lock()
	defer w.mu.Unlock()
	if h == nil {
		freed = w.forgetLocked(node)
	} else {
		w.onHub[node] = *h
	}
	if t, ok := w.pendingSince[node]; ok {
		w.metrics.lag.Observe(now.Sub(t).Seconds())
		delete(w.pendingSince, node)
	}
	w.metrics.nodes.Set(float64(len(w.onHub)))
}

// refresh reads what the hub holds under a snapshot name after a write was
// refused because the writer's knowledge was stale.
func (w *writer) refresh(ctx context.Context, node, name string) error {
	snap := &metav1.PartialObjectMetadata{}
	snap.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshot"))
	err := w.hubReader.Get(ctx, types.NamespacedName{Namespace: w.cluster.Namespace, Name: name}, snap)
	var freed string
	defer func() { w.placeFreed(freed) }()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case apierrors.IsNotFound(err):
		freed = w.forgetLocked(node)
	case err != nil:
		return err
	default:
		w.onHub[node] = hubSnapshot{name: name, digest: snap.Annotations[fleetv1.DigestAnnotation], resourceVersion: snap.ResourceVersion}
	}
	return nil
}

func (w *writer) snapshot(node string, status fleetv1.NodeSnapshotStatus, digest string) *fleetv1.NodeSnapshot {
	return &fleetv1.NodeSnapshot{
		TypeMeta: metav1.TypeMeta{APIVersion: fleetv1.GroupVersion.String(), Kind: "NodeSnapshot"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            projection.SnapshotName(w.cluster.Name, node),
			Namespace:       w.cluster.Namespace,
			Labels:          projection.SnapshotLabels(w.cluster.Name, status.Labels),
			Annotations:     map[string]string{fleetv1.DigestAnnotation: digest, fleetv1.NodeNameAnnotation: node},
			OwnerReferences: []metav1.OwnerReference{w.owner},
		},
		Spec:   fleetv1.NodeSnapshotSpec{ClusterName: w.cluster.Name, NodeName: node},
		Status: status,
	}
}

// apply writes snap with server-side apply as the operator's field
// manager, forcing its own fields: it creates the snapshot, or updates it
// if snap has a resourceVersion that still matches. What other managers
// set (labels, annotations) is theirs and stays; what the operator set
// before and leaves out now (a label removed from the node) goes. It
// returns the new resourceVersion.
//
// Two choices spare the hub work on every write, which bounds how fast
// snapshots can follow their nodes: the body comes from typed structs, so
// it cannot hold an unknown field and field validation (a second, strict
// parse of the patch on the API server) is skipped; and only metadata is
// asked back, since the resourceVersion is all the writer keeps.
func (w *writer) apply(ctx context.Context, snap *fleetv1.NodeSnapshot) (string, error) {
	raw, err := json.Marshal(applyBody{
		APIVersion: fleetv1.GroupVersion.String(), Kind: "NodeSnapshot",
		Metadata: applyMeta{
			Name: snap.Name, Namespace: snap.Namespace, ResourceVersion: snap.ResourceVersion,
			Labels: snap.Labels, Annotations: snap.Annotations, OwnerReferences: snap.OwnerReferences,
		},
		Spec: &snap.Spec, Status: &snap.Status,
	})
	if err != nil {
		return "", err
	}
	m := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: snap.Namespace, Name: snap.Name}}
	m.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshot"))
	if err := w.hub.Patch(ctx, m, client.RawPatch(types.ApplyPatchType, raw),
		client.FieldOwner(fleetv1.FieldManager), client.ForceOwnership, client.FieldValidation(metav1.FieldValidationIgnore)); err != nil {
		return "", err
	}
	return m.ResourceVersion, nil
}

// applyBody is a NodeSnapshot as the operator applies it: only the fields
// it owns (no creationTimestamp, which ObjectMeta would send as null).
type applyBody struct {
	APIVersion string                      `json:"apiVersion"`
	Kind       string                      `json:"kind"`
	Metadata   applyMeta                   `json:"metadata"`
	Spec       *fleetv1.NodeSnapshotSpec   `json:"spec"`
	Status     *fleetv1.NodeSnapshotStatus `json:"status"`
}

type applyMeta struct {
	Name            string                  `json:"name"`
	Namespace       string                  `json:"namespace"`
	ResourceVersion string                  `json:"resourceVersion,omitempty"`
	Labels          map[string]string       `json:"labels,omitempty"`
	Annotations     map[string]string       `json:"annotations,omitempty"`
	OwnerReferences []metav1.OwnerReference `json:"ownerReferences,omitempty"`
}
