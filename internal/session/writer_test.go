package session

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/projection"
)

// writerFixture is a writer against a fake hub (a pure unit: the writer's
// decisions, not the API server, are under test), with the informer's
// store played by a map.
type writerFixture struct {
	t      *testing.T
	w      *writer
	hub    client.WithWatch
	mu     sync.Mutex
	nodes  map[string]*mirroredNode
	member map[string]*corev1.Node // what the member would answer a GET with
	writes []string                // "create|update|delete <snapshot>"
	fail   map[string]int          // verb → how many more calls fail
	// duringWrite, if set, runs once while the next write is in flight.
	duringWrite func()
}

var writerClusters int

func newWriterFixture(t *testing.T, existing ...client.Object) *writerFixture {
	scheme := runtime.NewScheme()
	if err := fleetv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &writerFixture{t: t, nodes: map[string]*mirroredNode{}, member: map[string]*corev1.Node{}, fail: map[string]int{}}
	record := func(verb string, obj client.Object) error {
		f.mu.Lock()
		hook := f.duringWrite
		f.duringWrite = nil
		if f.fail[verb] > 0 {
			f.fail[verb]--
			f.mu.Unlock()
			return apierrors.NewInternalError(errors.New("injected"))
		}
		f.writes = append(f.writes, verb+" "+obj.GetName())
		f.mu.Unlock()
		if hook != nil {
			hook()
		}
		return nil
	}
	f.hub = fake.NewClientBuilder().WithScheme(scheme).WithObjects(existing...).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := record("create", obj); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if patch.Type() != types.ApplyPatchType {
				return c.Patch(ctx, obj, patch, opts...)
			}
			// The writer applies: with a resourceVersion to update what it
			// knows is there, without one to create. The fake client
			// applies typed configurations only: hand it the same body.
			raw, err := patch.Data(obj)
			if err != nil {
				return err
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw); err != nil {
				return err
			}
			verb := "create"
			if u.GetResourceVersion() != "" {
				verb = "update"
			}
			if err := record(verb, u); err != nil {
				return err
			}
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fleetv1.FieldManager), client.ForceOwnership); err != nil {
				return err
			}
			obj.SetResourceVersion(u.GetResourceVersion())
			return nil
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			if err := record("delete", obj); err != nil {
				return err
			}
			return c.Delete(ctx, obj, opts...)
		},
	}).Build()
	writerClusters++
	cluster := types.NamespacedName{Namespace: "fleet", Name: "c"}
	f.w = newWriter(&writer{
		cluster: cluster, owner: metav1.OwnerReference{APIVersion: fleetv1.GroupVersion.String(), Kind: "ManagedCluster", Name: "c", UID: "u"},
		filter: projection.NewFilter(fleetv1.MirrorSpec{}),
		hub:    f.hub, hubReader: f.hub, metrics: newClusterMetrics(types.NamespacedName{Namespace: "writer-test", Name: fmt.Sprint(writerClusters)}),
		clock: clocktesting.NewFakePassiveClock(metav1.Now().Time),
		node: func(name string) (*mirroredNode, bool, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			m, ok := f.nodes[name]
			return m, ok, nil
		},
		getNode: func(_ context.Context, name string) (*corev1.Node, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if n, ok := f.member[name]; ok {
				return n.DeepCopy(), nil
			}
			return nil, apierrors.NewNotFound(corev1.Resource("nodes"), name)
		},
	})
	if _, err := f.w.seed(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f
}

// set plays the informer's transform: the node's current state, projected.
func (f *writerFixture) set(name, label string) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"l": label}}}
	st := projection.Project(n, projection.NewFilter(fleetv1.MirrorSpec{}))
	m := &mirroredNode{ObjectMeta: metav1.ObjectMeta{Name: name}, digest: projection.Digest(&st)}
	if !f.w.holds(name, m.digest) {
		m.pending.Store(&st)
	}
	f.mu.Lock()
	f.nodes[name] = m
	f.member[name] = n
	f.mu.Unlock()
}

func (f *writerFixture) remove(name string) {
	f.mu.Lock()
	delete(f.nodes, name)
	delete(f.member, name)
	f.mu.Unlock()
}

func (f *writerFixture) sync(name string) error {
	f.t.Helper()
	return f.w.sync(context.Background(), name)
}

func (f *writerFixture) mustSync(name string) {
	f.t.Helper()
	if err := f.sync(name); err != nil {
		f.t.Fatalf("sync %s: %v", name, err)
	}
}

// takeWrites returns and forgets the writes made so far.
func (f *writerFixture) takeWrites() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = nil
	return w
}

func (f *writerFixture) label(name string) string {
	f.t.Helper()
	s := &fleetv1.NodeSnapshot{}
	if err := f.hub.Get(context.Background(), client.ObjectKey{Namespace: "fleet", Name: "c." + name}, s); err != nil {
		f.t.Fatal(err)
	}
	return s.Status.Labels["l"]
}

func TestWriterCreatesUpdatesDeletesAndSkipsByDigest(t *testing.T) {
	f := newWriterFixture(t)
	f.set("n1", "a")
	f.mustSync("n1")
	if got := f.takeWrites(); !slices.Equal(got, []string{"create c.n1"}) {
		t.Fatalf("a new node: %v, want one create", got)
	}
	f.mustSync("n1") // a resync or heartbeat: same digest
	f.set("n1", "a")
	f.mustSync("n1")
	if got := f.takeWrites(); len(got) != 0 {
		t.Fatalf("an unchanged node: %v, want no write", got)
	}
	f.set("n1", "b")
	f.mustSync("n1")
	if got := f.takeWrites(); !slices.Equal(got, []string{"update c.n1"}) || f.label("n1") != "b" {
		t.Fatalf("a changed node: %v, label %q; want one update to b", got, f.label("n1"))
	}
	f.remove("n1")
	f.mustSync("n1")
	f.mustSync("n1")
	if got := f.takeWrites(); !slices.Equal(got, []string{"delete c.n1"}) {
		t.Fatalf("a deleted node: %v, want one delete", got)
	}
}

func TestWriterSeedSkipsWhatTheHubHolds(t *testing.T) {
	// What a previous operator wrote: one snapshot up to date, one stale,
	// one of a node that is gone.
	seedFrom := newWriterFixture(t)
	for _, n := range []string{"same", "stale", "gone"} {
		seedFrom.set(n, "old")
		seedFrom.mustSync(n)
	}
	var existing []client.Object
	var list fleetv1.NodeSnapshotList
	if err := seedFrom.hub.List(context.Background(), &list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		list.Items[i].ResourceVersion = ""
		existing = append(existing, &list.Items[i])
	}

	f := newWriterFixture(t, existing...)
	f.set("same", "old")
	f.set("stale", "new")
	for _, n := range []string{"same", "stale"} {
		f.mustSync(n)
	}
	if got := f.w.vanished(); !slices.Equal(got, []string{"gone"}) {
		t.Fatalf("vanished = %v, want [gone]", got)
	}
	f.mustSync("gone")
	got := f.takeWrites()
	slices.Sort(got)
	if !slices.Equal(got, []string{"delete c.gone", "update c.stale"}) {
		t.Fatalf("writes after a restart: %v", got)
	}
}

func TestWriterRetriesAFailedWrite(t *testing.T) {
	f := newWriterFixture(t)
	f.set("n1", "a")
	f.fail["create"] = 1
	if err := f.sync("n1"); err == nil {
		t.Fatal("the injected failure was not reported")
	}
	if f.w.settled() {
		t.Fatal("a failed write is not waiting for its retry")
	}
	f.mustSync("n1")
	if got := f.takeWrites(); !slices.Equal(got, []string{"create c.n1"}) || !f.w.settled() {
		t.Fatalf("retry: %v, settled %v", got, f.w.settled())
	}
}

func TestWriterLastStateWinsOverABurst(t *testing.T) {
	f := newWriterFixture(t)
	f.set("n1", "0")
	f.mustSync("n1")
	f.takeWrites()
	// Ten changes arrive before the worker gets to the node: one write,
	// of the last state.
	for i := 1; i <= 10; i++ {
		f.set("n1", fmt.Sprint(i))
	}
	f.mustSync("n1")
	if got := f.takeWrites(); len(got) != 1 || f.label("n1") != "10" {
		t.Fatalf("burst: %v, label %q; want one write of 10", got, f.label("n1"))
	}
	// A change that lands while the previous one is being written is
	// written after it, not lost.
	f.set("n1", "11")
	f.duringWrite = func() { f.set("n1", "12") }
	f.mustSync("n1")
	if f.label("n1") != "11" {
		t.Fatalf("label %q, want 11", f.label("n1"))
	}
	f.mustSync("n1")
	if got := f.takeWrites(); len(got) != 2 || f.label("n1") != "12" {
		t.Fatalf("writes %v, label %q; want two writes, 12 last", got, f.label("n1"))
	}
}

func TestWriterRelearnsAfterAConflictAndWritesALostSnapshotAgain(t *testing.T) {
	f := newWriterFixture(t)
	f.set("n1", "a")
	f.mustSync("n1")
	// Someone else changes the snapshot: the writer's resourceVersion is stale.
	s := &fleetv1.NodeSnapshot{}
	ctx := context.Background()
	if err := f.hub.Get(ctx, client.ObjectKey{Namespace: "fleet", Name: "c.n1"}, s); err != nil {
		t.Fatal(err)
	}
	s.Annotations["someone"] = "else"
	if err := f.hub.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
	f.set("n1", "b")
	if err := f.sync("n1"); !apierrors.IsConflict(err) {
		t.Fatalf("sync on a stale resourceVersion = %v, want a conflict", err)
	}
	f.mustSync("n1") // the retry, with what the refresh learned
	if f.label("n1") != "b" {
		t.Fatalf("label %q after the retry, want b", f.label("n1"))
	}

	// Someone deletes it: the session is told, and the writer creates it
	// again from the projection it still has.
	f.set("n1", "c")
	if err := f.hub.Delete(ctx, &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "c.n1"}}); err != nil {
		t.Fatal(err)
	}
	if node, ok := f.w.lost("c.n1"); !ok || node != "n1" {
		t.Fatalf("lost(c.n1) = %q, %v", node, ok)
	}
	f.takeWrites()
	f.mustSync("n1")
	if got := f.takeWrites(); !slices.Equal(got, []string{"create c.n1"}) || f.label("n1") != "c" {
		t.Fatalf("after a loss: %v", got)
	}
	if got := slices.Collect(maps.Keys(f.w.onHub)); !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("onHub = %v", got)
	}
}

func TestWriterCapsTheNodesAndFillsAFreedPlace(t *testing.T) {
	f := newWriterFixture(t)
	var requeued []string
	changes := 0
	f.w.maxNodes, f.w.requeue, f.w.capChanged = 2, func(n string) { requeued = append(requeued, n) }, func() { changes++ }
	for _, n := range []string{"a", "b", "c"} {
		f.set(n, "x")
		f.mustSync(n)
	}
	if got := f.takeWrites(); len(got) != 2 || f.w.unmirrored() != 1 {
		t.Fatalf("writes %v, unmirrored %d; want 2 creates and 1 node left out", got, f.w.unmirrored())
	}
	if f.nodes["c"].pending.Load() != nil {
		t.Error("a node left out keeps its projection in memory")
	}
	f.remove("a")
	f.mustSync("a")
	if !slices.Equal(requeued, []string{"c"}) || f.w.unmirrored() != 0 {
		t.Fatalf("requeued %v after a place freed, want [c]", requeued)
	}
	if changes != 2 {
		t.Errorf("the session was told of %d changes of the count left out, want 2", changes)
	}
	f.mustSync("c") // read again from the member: its projection was dropped
	if f.label("c") != "x" {
		t.Fatalf("c's label %q after taking the freed place", f.label("c"))
	}
	// The hub's delete event may reach the session before the writer has
	// recorded its own delete: the place is freed either way.
	f.set("d", "x")
	f.mustSync("d")
	if f.w.unmirrored() != 1 {
		t.Fatalf("unmirrored %d, want d left out", f.w.unmirrored())
	}
	f.remove("b")
	if _, ok := f.w.lost("c.b"); !ok {
		t.Fatal("lost(c.b) found nothing")
	}
	f.mustSync("b")
	if !slices.Equal(requeued, []string{"c", "d"}) || f.w.unmirrored() != 0 {
		t.Fatalf("requeued %v, unmirrored %d; want d to take b's place", requeued, f.w.unmirrored())
	}
}

// TestWriterFindsWhatWentMissing: after its watch of the hub lost track,
// the writer lists the hub again and names the snapshots it wrote that
// are no longer there, and only those.
func TestWriterFindsWhatWentMissing(t *testing.T) {
	f := newWriterFixture(t)
	for _, n := range []string{"a", "b", "c"} {
		f.set(n, "1")
		f.mustSync(n)
	}
	if err := f.hub.Delete(context.Background(), &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "c.b"}}); err != nil {
		t.Fatal(err)
	}
	gone, _, err := f.w.missing(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gone, []string{"c.b"}) {
		t.Fatalf("missing = %v, want [c.b]", gone)
	}
}
