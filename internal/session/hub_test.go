package session

import (
	"context"
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/dev/controlplane"
	"github.com/nodemirror/nodemirror/internal/projection"
)

// TestCreateThenApplyAgainstTheHub runs the writer's hub calls against a
// real API server: what server-side apply keeps and drops after a plain
// create is the API server's business, not something a fake can answer.
func TestCreateThenApplyAgainstTheHub(t *testing.T) {
	if err := controlplane.CheckAssets(); err != nil {
		t.Fatal(err)
	}
	env := controlplane.NewHub()
	t.Cleanup(func() { controlplane.StopAll(env) })
	cfgs, err := controlplane.StartAll(env)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cfgs[0]
	scheme := runtime.NewScheme()
	if err := fleetv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := client.New(cfg, client.Options{Scheme: scheme, HTTPClient: httpClient})
	if err != nil {
		t.Fatal(err)
	}
	snapshots, err := NewSnapshotClient(cfg, httpClient)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}}); err != nil {
		t.Fatal(err)
	}
	w := newWriter(&writer{cluster: types.NamespacedName{Namespace: "fleet", Name: "c"}, hub: hub, hubReader: hub, hubSnapshots: snapshots})
	snap := func(labels map[string]string) *fleetv1.NodeSnapshot {
		st := fleetv1.NodeSnapshotStatus{Labels: labels}
		s := w.snapshot("n1", st, projection.Digest(&st))
		s.OwnerReferences = nil // no ManagedCluster here
		return s
	}
	metadataOf := func() *metav1.PartialObjectMetadata {
		t.Helper()
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshot"))
		if err := hub.Get(ctx, client.ObjectKey{Namespace: "fleet", Name: "c.n1"}, m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	rv, err := w.create(ctx, snap(map[string]string{"a": "1", "b": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := metadataOf(); rv == "" || got.ResourceVersion != rv {
		t.Fatalf("create answered resourceVersion %q; the hub holds %q", rv, got.ResourceVersion)
	}
	if _, err := w.create(ctx, snap(map[string]string{"a": "1"})); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("a second create: %v, want AlreadyExists (the writer refreshes on it)", err)
	}

	// Someone else labels the snapshot; then the node loses label b.
	theirs := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "c.n1"}}
	theirs.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshot"))
	if err := hub.Patch(ctx, theirs, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"theirs":"x"}}}`)), client.FieldOwner("someone")); err != nil {
		t.Fatal(err)
	}
	next := snap(map[string]string{"a": "1"})
	next.ResourceVersion = theirs.ResourceVersion
	rv, leftover, err := w.apply(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(leftover, []string{"b"}) {
		t.Fatalf("after the apply, labels left over: %v, want [b]", leftover)
	}
	if h := heldSnapshot(metadataOf()); h.digest != "" {
		t.Fatalf("a snapshot keeping label b is held at digest %q, want none (to be written again)", h.digest)
	}
	if _, err := w.removeLabels(ctx, "c.n1", "1", leftover); !apierrors.IsConflict(err) {
		t.Fatalf("removing labels at a stale resourceVersion: %v, want a conflict", err)
	}
	if _, err := w.removeLabels(ctx, "c.n1", rv, leftover); err != nil {
		t.Fatal(err)
	}
	got := metadataOf()
	if want := map[string]string{fleetv1.ClusterLabel: "c", "a": "1", "theirs": "x"}; !maps.Equal(got.Labels, want) {
		t.Fatalf("labels %v, want %v", got.Labels, want)
	}
	if h := heldSnapshot(got); h.digest == "" || len(leftoverLabels(got.ManagedFields)) != 0 {
		t.Fatalf("after the removal: held %+v, leftover %v", h, leftoverLabels(got.ManagedFields))
	}
	// The next apply changes nothing and leaves nothing over.
	again := snap(map[string]string{"a": "1"})
	again.ResourceVersion = got.ResourceVersion
	if _, leftover, err := w.apply(ctx, again); err != nil || len(leftover) != 0 {
		t.Fatalf("apply again: leftover %v, %v", leftover, err)
	}
}
