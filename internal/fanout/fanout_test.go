package fanout

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/nodemirror/nodemirror/internal/protocol"
)

func snap(ns, cluster, node, rv string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("fleet.nodemirror.io/v1alpha1")
	u.SetKind("NodeSnapshot")
	u.SetNamespace(ns)
	u.SetName(cluster + "." + node)
	u.SetResourceVersion(rv)
	u.SetLabels(map[string]string{"fleet.nodemirror.io/cluster": cluster})
	return u
}

func newTestBroker(history int) *Broker {
	return NewBroker("fleet.nodemirror.io/v1alpha1", "NodeSnapshot", ByLabel("fleet.nodemirror.io/cluster"), history)
}

// drain pops everything pending as "TYPE name@resume" strings.
func drain(t *testing.T, o *Outbox) []string {
	t.Helper()
	var out []string
	for {
		it, overflow := o.Pop()
		if overflow {
			return append(out, "OVERFLOW")
		}
		if it == nil {
			return out
		}
		var env protocol.Envelope
		if err := json.Unmarshal(it.Encode(), &env); err != nil {
			t.Fatalf("envelope is not JSON: %v: %s", err, it.Encode())
		}
		var meta struct {
			Metadata struct{ Name, ResourceVersion string }
			Code     int
		}
		_ = json.Unmarshal(env.Event.Object, &meta)
		name := meta.Metadata.Name
		if env.Event.Type == protocol.Error {
			name = fmt.Sprint(meta.Code)
		}
		out = append(out, fmt.Sprintf("%s %s@%s", env.Event.Type, name, env.ResourceVersion))
	}
}

func TestOutboxConflation(t *testing.T) {
	a := &Object{Namespace: "n", Name: "a", Raw: []byte(`{"metadata":{"name":"a"}}`)}
	b := &Object{Namespace: "n", Name: "b", Raw: []byte(`{"metadata":{"name":"b"}}`)}
	for _, tc := range []struct {
		name   string
		pushes func(o *Outbox)
		want   []string
	}{
		{"modified twice", func(o *Outbox) {
			o.push("s", protocol.Modified, a, "1", false)
			o.push("s", protocol.Modified, b, "2", false)
			o.push("s", protocol.Modified, a, "3", false)
		}, []string{"MODIFIED b@2", "MODIFIED a@3"}},
		{"added then modified", func(o *Outbox) {
			o.push("s", protocol.Added, a, "1", false)
			o.push("s", protocol.Modified, a, "2", false)
		}, []string{"ADDED a@2"}},
		{"added then deleted", func(o *Outbox) {
			o.push("s", protocol.Added, a, "1", false)
			o.push("s", protocol.Deleted, a, "2", false)
		}, nil},
		{"modified then deleted keeps the delete", func(o *Outbox) {
			o.push("s", protocol.Modified, a, "1", false)
			o.push("s", protocol.Deleted, a, "2", false)
		}, []string{"DELETED a@2"}},
		{"deleted then added", func(o *Outbox) {
			o.push("s", protocol.Deleted, a, "1", false)
			o.push("s", protocol.Added, a, "2", false)
		}, []string{"MODIFIED a@2"}},
		{"subscriptions are separate", func(o *Outbox) {
			o.push("s", protocol.Modified, a, "1", false)
			o.push("t", protocol.Modified, a, "1", false)
		}, []string{"MODIFIED a@1", "MODIFIED a@1"}},
		{"overflow", func(o *Outbox) {
			for i := range 5 {
				o.push("s", protocol.Added, &Object{Namespace: "n", Name: fmt.Sprint(i), Raw: []byte(`{"metadata":{"name":"x"}}`)}, fmt.Sprint(i), false)
			}
		}, []string{"OVERFLOW"}},
		{"catching up never overflows", func(o *Outbox) {
			for i := range 6 {
				o.push("s", protocol.Added, &Object{Namespace: "n", Name: fmt.Sprint(i), Raw: []byte(`{"metadata":{"name":"x"}}`)}, "", true)
			}
		}, []string{"ADDED x@", "ADDED x@", "ADDED x@", "ADDED x@", "ADDED x@", "ADDED x@"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOutbox(4, 0, nil)
			tc.pushes(o)
			if got := drain(t, o); strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestOutboxConflationAtAnyDepth conflates the same way whether a pending
// item is found by scanning a short queue or through the index a longer
// one builds, and as the queue grows past the scan limit, empties and
// grows again.
func TestOutboxConflationAtAnyDepth(t *testing.T) {
	obj := func(i int) *Object {
		return &Object{Namespace: "n", Name: fmt.Sprint(i), Raw: fmt.Appendf(nil, `{"metadata":{"name":"o%d"}}`, i)}
	}
	o := NewOutbox(1000, 0, nil)
	for _, depth := range []int{3, scanLimit, scanLimit + 1, 3 * scanLimit, 2} {
		for i := range depth {
			o.push("s", protocol.Modified, obj(i), fmt.Sprint(i), false)
		}
		// Every other object changes again, the first one deleted, and one
		// added and deleted before it was seen.
		for i := 0; i < depth; i += 2 {
			typ := protocol.Modified
			if i == 0 {
				typ = protocol.Deleted
			}
			o.push("s", typ, obj(i), fmt.Sprint(100+i), false)
		}
		o.push("s", protocol.Added, obj(999), "998", false)
		o.push("s", protocol.Deleted, obj(999), "999", false)
		var want []string
		for i := 1; i < depth; i += 2 {
			want = append(want, fmt.Sprintf("MODIFIED o%d@%d", i, i))
		}
		for i := 0; i < depth; i += 2 {
			typ := protocol.Modified
			if i == 0 {
				typ = protocol.Deleted
			}
			want = append(want, fmt.Sprintf("%s o%d@%d", typ, i, 100+i))
		}
		if got := drain(t, o); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("depth %d: got %v, want %v", depth, got, want)
		}
	}
}

func TestOutboxByteLimitCountsCatchUpAndControlBodies(t *testing.T) {
	a := &Object{Namespace: "n", Name: "a", Raw: []byte(`{}`)}
	o := NewOutbox(1000, 3*ItemOverhead+100, nil)
	o.push("s", protocol.Added, a, "", true) // catch-up counts too
	o.PushError("s", map[string]string{"message": strings.Repeat("x", 50)})
	if got := drain(t, o); len(got) != 2 {
		t.Fatalf("within the limit: %v", got)
	}
	for range 3 {
		o.PushError("s", map[string]string{"message": strings.Repeat("x", 50)})
	}
	if got := drain(t, o); strings.Join(got, ",") != "OVERFLOW" {
		t.Fatalf("past the byte limit: %v, want OVERFLOW", got)
	}
}

func TestBrokerInitialStateAndChanges(t *testing.T) {
	b := newTestBroker(100)
	if err := b.Replace([]any{snap("x", "c1", "n1", "10"), snap("x", "c2", "n1", "11"), snap("y", "c1", "n9", "12")}, "20"); err != nil {
		t.Fatal(err)
	}
	out := NewOutbox(100, 0, nil)
	b.Subscribe(&Subscription{ID: "s", Filter: Filter{Namespace: "x"}, Out: out}, "")
	if got, want := drain(t, out), []string{"ADDED c1.n1@", "ADDED c2.n1@", "BOOKMARK @20"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("initial state %v, want %v", got, want)
	}
	only := NewOutbox(100, 0, nil)
	b.Subscribe(&Subscription{ID: "c2", Filter: Filter{Namespace: "x", Clusters: map[string]bool{"c2": true}}, Out: only}, "")
	drain(t, only)

	_ = b.Update(snap("x", "c1", "n1", "21"))
	_ = b.Add(snap("y", "c1", "n8", "22"))
	_ = b.Delete(snap("x", "c2", "n1", "23"))
	if got, want := drain(t, out), []string{"MODIFIED c1.n1@21", "DELETED c2.n1@23"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("changes %v, want %v", got, want)
	}
	if got, want := drain(t, only), []string{"DELETED c2.n1@23"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("cluster filter %v, want %v", got, want)
	}
	if objs, rv, _ := b.List(Filter{}); len(objs) != 3 || rv != "23" || objs[0].Name != "c1.n1" || objs[2].Namespace != "y" {
		t.Errorf("List = %d objects at %s", len(objs), rv)
	}
	if objs, _, _ := b.List(Filter{Namespace: "x", Clusters: map[string]bool{"c1": true}}); len(objs) != 1 || objs[0].Name != "c1.n1" {
		t.Errorf("List by cluster = %v", objs)
	}
	// An object that moves to another cluster leaves the first one's index.
	moved := snap("y", "c1", "n8", "24")
	moved.SetLabels(map[string]string{"fleet.nodemirror.io/cluster": "c3"})
	_ = b.Update(moved)
	if objs, _, _ := b.List(Filter{Namespace: "y", Clusters: map[string]bool{"c1": true}}); len(objs) != 1 || objs[0].Name != "c1.n9" {
		t.Errorf("List by cluster after a move = %d objects", len(objs))
	}
	if objs, _, _ := b.List(Filter{Namespace: "y", Clusters: map[string]bool{"c3": true}}); len(objs) != 1 {
		t.Errorf("List of the new cluster = %d objects", len(objs))
	}
	_ = b.Bookmark("30")
	if got := drain(t, out); strings.Join(got, ",") != "BOOKMARK @30" {
		t.Errorf("bookmark %v", got)
	}
}

func TestBrokerBeforeTheFirstList(t *testing.T) {
	b := newTestBroker(10)
	out := NewOutbox(100, 0, nil)
	// A watch event may come before the list finishes; it is no state yet.
	_ = b.Add(snap("x", "c", "early", "3"))
	if err := b.Subscribe(&Subscription{ID: "s", Filter: Filter{Namespace: "x"}, Out: out}, ""); !errors.Is(err, ErrNotSynced) {
		t.Fatalf("Subscribe before the first list = %v, want ErrNotSynced", err)
	}
	if got := drain(t, out); len(got) != 0 {
		t.Errorf("an unsynced broker handed out %v", got)
	}
	if _, _, err := b.List(Filter{}); !errors.Is(err, ErrNotSynced) {
		t.Errorf("List before the first list = %v, want ErrNotSynced", err)
	}
	select {
	case <-b.Synced():
		t.Fatal("Synced is closed before the first list")
	default:
	}
	// A namespace listed empty is a true empty state.
	_ = b.Replace(nil, "10")
	<-b.Synced()
	if err := b.Subscribe(&Subscription{ID: "s", Filter: Filter{Namespace: "x"}, Out: out}, ""); err != nil {
		t.Fatal(err)
	}
	if got := drain(t, out); strings.Join(got, ",") != "BOOKMARK @10" {
		t.Errorf("after an empty list: %v", got)
	}
	_ = b.Replace(nil, "11") // a relist closes nothing twice
}

func TestBrokerResume(t *testing.T) {
	b := newTestBroker(3)
	_ = b.Replace([]any{snap("x", "c", "a", "5"), snap("x", "c", "b", "6")}, "10")
	_ = b.Update(snap("x", "c", "a", "11"))
	_ = b.Update(snap("x", "c", "b", "12"))
	_ = b.Update(snap("x", "c", "a", "13"))

	resume := func(rv string) []string {
		out := NewOutbox(100, 0, nil)
		b.Subscribe(&Subscription{ID: "s", Filter: Filter{Namespace: "x"}, Out: out}, rv)
		return drain(t, out)
	}
	if got, want := resume("11"), []string{"MODIFIED c.b@12", "MODIFIED c.a@13", "BOOKMARK @13"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("resume from 11: %v, want %v", got, want)
	}
	if got, want := resume("13"), []string{"BOOKMARK @13"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("resume from latest: %v, want %v", got, want)
	}
	// A fourth event pushes the 11 out of the three-event history.
	_ = b.Update(snap("x", "c", "b", "14"))
	if got, want := resume("10"), []string{"ERROR 410@", "ADDED c.a@", "ADDED c.b@", "BOOKMARK @14"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("resume from evicted: %v, want %v", got, want)
	}
	// From the new history start: b@12 and b@14 conflate, in order.
	if got, want := resume("11"), []string{"MODIFIED c.a@13", "MODIFIED c.b@14", "BOOKMARK @14"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("resume from the new history start: %v, want %v", got, want)
	}
	// A point this broker has not reached: after ResumeWait, start over.
	defer func(d time.Duration) { ResumeWait = d }(ResumeWait)
	ResumeWait = 50 * time.Millisecond
	if got := resume("99"); got[0] != "ERROR 410@" {
		t.Errorf("resume from the future must start over: %v", got)
	}
}

// TestBrokerResumeFromAReplicaAhead: a client of another sidecar replica
// resumes here from a point this broker's hub watch has not reached yet.
// The broker waits until it has, and answers with exactly the events
// after it, instead of a state older than what the client has seen.
func TestBrokerResumeFromAReplicaAhead(t *testing.T) {
	b := newTestBroker(10)
	_ = b.Replace([]any{snap("x", "c", "a", "5"), snap("x", "c", "b", "6")}, "10")
	_ = b.Update(snap("x", "c", "a", "11"))
	// The other replica already delivered b@12 and a@13.
	out := NewOutbox(100, 0, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Subscribe(&Subscription{ID: "s", Filter: Filter{Namespace: "x"}, Out: out}, "13")
	}()
	time.Sleep(20 * time.Millisecond)
	_ = b.Update(snap("x", "c", "b", "12"))
	_ = b.Update(snap("x", "c", "a", "13"))
	_ = b.Update(snap("x", "c", "b", "14"))
	select {
	case <-done:
	case <-time.After(ResumeWait + time.Second):
		t.Fatal("the resume did not end once the broker reached its point")
	}
	got := strings.Join(drain(t, out), ",")
	// b@14 came after the point: live or replayed, never a 410.
	if got != "BOOKMARK @13,MODIFIED c.b@14" && got != "MODIFIED c.b@14,BOOKMARK @14" {
		t.Errorf("resume from a point reached meanwhile: %s, want b@14 and no 410", got)
	}
}

func TestBrokerRelist(t *testing.T) {
	b := newTestBroker(10)
	_ = b.Replace([]any{snap("x", "c", "a", "5"), snap("x", "c", "b", "6")}, "10")
	out := NewOutbox(100, 0, nil)
	b.Subscribe(&Subscription{ID: "s", Filter: Filter{Namespace: "x"}, Out: out}, "")
	drain(t, out)
	// While the watch was down, a was deleted, b changed and c appeared.
	_ = b.Replace([]any{snap("x", "c", "b", "16"), snap("x", "c", "c", "17")}, "20")
	got := drain(t, out)
	if strings.Join(got, ",") != "DELETED c.a@20,MODIFIED c.b@20,ADDED c.c@20" && strings.Join(got, ",") != "DELETED c.a@20,ADDED c.c@20,MODIFIED c.b@20" {
		t.Errorf("relist diff: %v", got)
	}
	if b.Len() != 2 {
		t.Errorf("Len = %d", b.Len())
	}
}

func TestNewFilter(t *testing.T) {
	a := &Object{Namespace: "x", Cluster: "a"}
	b := &Object{Namespace: "x", Cluster: "b"}
	other := &Object{Namespace: "y", Cluster: "a"}
	for _, tc := range []struct {
		f    Filter
		want [3]bool
	}{
		{NewFilter("", nil), [3]bool{true, true, true}},
		{NewFilter("x", nil), [3]bool{true, true, false}},
		{NewFilter("x", []string{}), [3]bool{true, true, false}},
		{NewFilter("x", []string{"a"}), [3]bool{true, false, false}},
		{NewFilter("", []string{"a", "c"}), [3]bool{true, false, true}},
	} {
		if got := [3]bool{tc.f.Match(a), tc.f.Match(b), tc.f.Match(other)}; got != tc.want {
			t.Errorf("%+v matches %v, want %v", tc.f, got, tc.want)
		}
	}
}

// BenchmarkOutboxPushPop is a client that keeps up: one event pending at a
// time, pushed by the broker and popped by the connection's writer.
func BenchmarkOutboxPushPop(b *testing.B) {
	o := NewOutbox(1000, 0, nil)
	objs := make([]*Object, 100)
	for i := range objs {
		objs[i] = &Object{Namespace: "fleet", Name: fmt.Sprintf("east.node-%03d", i), Raw: []byte(`{}`)}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o.push("nodes", protocol.Modified, objs[i%len(objs)], "1", false)
		o.Pop()
	}
}

// The direct writer takes a message only when nothing is queued or being
// written, and one it refuses goes before those queued meanwhile: per
// subscription, messages leave in the order they came.
func TestOutboxDirectWriter(t *testing.T) {
	obj := func(name string) *Object {
		return &Object{Namespace: "n", Name: name, Raw: []byte(`{"metadata":{"name":"` + name + `"}}`)}
	}
	var written []string
	take := true
	var during func()
	o := NewOutbox(100, 0, nil)
	o.SetDirect(func(it *Item) bool {
		if during != nil {
			f := during
			during = nil
			f()
		}
		if take {
			written = append(written, it.Object.Name)
		}
		return take
	})
	ready := func() bool {
		select {
		case <-o.Ready():
			return true
		default:
			return false
		}
	}
	pop := func() string {
		it, _ := o.Pop()
		if it == nil {
			return ""
		}
		o.Written()
		if it.Object == nil {
			return it.Type
		}
		return it.Object.Name
	}

	o.push("s", protocol.Modified, obj("a"), "1", false)
	if fmt.Sprint(written) != "[a]" || o.Len() != 0 || ready() {
		t.Fatalf("an idle outbox's message went %v with %d queued, ready %v; want it written directly", written, o.Len(), ready())
	}

	take = false
	o.push("s", protocol.Modified, obj("b"), "2", false)
	if o.Len() != 1 || !ready() {
		t.Fatalf("a refused message: %d queued, want 1 and Ready signalled", o.Len())
	}
	take = true
	o.push("s", protocol.Modified, obj("c"), "3", false)
	if fmt.Sprint(written) != "[a]" {
		t.Fatalf("a message behind a queued one was written directly: %v", written)
	}

	it, _ := o.Pop()
	if it == nil || it.Object.Name != "b" {
		t.Fatalf("popped %v, want b", it)
	}
	if got, _ := o.Pop(); got != nil {
		t.Fatalf("popped %s while b is being written", got.Object.Name)
	}
	o.Written()
	if got := pop(); got != "c" {
		t.Fatalf("popped %q after b, want c", got)
	}
	o.push("s", protocol.Modified, obj("d"), "4", false)
	it, _ = o.Pop()
	if it != nil || fmt.Sprint(written) != "[a d]" {
		t.Fatalf("after the queue emptied: popped %v, written %v; want d written directly", it, written)
	}

	// While the direct writer works on e, another deliverer queues f; e
	// is refused and must still leave first.
	take = false
	during = func() { o.push("t", protocol.Modified, obj("f"), "6", false) }
	o.push("s", protocol.Modified, obj("e"), "5", false)
	if !ready() {
		t.Fatal("Ready not signalled with two messages queued")
	}
	if a, b := pop(), pop(); a != "e" || b != "f" {
		t.Fatalf("popped %s, %s; want e then f", a, b)
	}

	// Taken while another was queued meanwhile: the writer is woken.
	take = true
	during = func() { o.push("t", protocol.Modified, obj("h"), "8", false) }
	o.push("s", protocol.Modified, obj("g"), "7", false)
	if !ready() || pop() != "h" || fmt.Sprint(written) != "[a d g]" {
		t.Fatalf("written %v; want g written directly and h queued with Ready signalled", written)
	}

	o.Close()
	o.push("s", protocol.Modified, obj("i"), "9", false)
	if fmt.Sprint(written) != "[a d g]" {
		t.Fatalf("a closed outbox wrote %v", written)
	}
}

// What a subscription catches up with is queued, never written directly,
// so that a resume's missed changes conflate to one event per object.
func TestOutboxDirectWriterLeavesCatchUpQueued(t *testing.T) {
	a := &Object{Namespace: "n", Name: "a", Raw: []byte(`{"metadata":{"name":"a"}}`)}
	o := NewOutbox(100, 0, nil)
	o.SetDirect(func(*Item) bool { t.Error("a catch-up event was written directly"); return true })
	o.push("s", protocol.Modified, a, "1", true)
	o.push("s", protocol.Modified, a, "2", true)
	if o.Len() != 1 {
		t.Fatalf("%d queued, want the two catch-up events conflated to one", o.Len())
	}
}

// TestEncodedEnvelope checks that an item's head, object and end, as a
// writer sends them, are the Envelope the protocol describes, whatever the
// subscription ID holds.
func TestEncodedEnvelope(t *testing.T) {
	obj := []byte(`{"kind":"NodeSnapshot","metadata":{"name":"c.n1"}}`)
	for _, id := range []string{"ui-1", "a.b:c_d-e", `quote"and\backslash`, "ünïcode", "tab\tcontrol"} {
		for _, rv := range []string{"", "12345"} {
			it := &Item{Subscription: id, Type: protocol.Modified, Body: obj, ResumeFrom: rv}
			raw := append(append(it.AppendEncodedHead(nil), it.EncodedObject()...), EncodedEnd...)
			var env protocol.Envelope
			if err := json.Unmarshal(raw, &env); err != nil {
				t.Fatalf("id %q: %v in %s", id, err, raw)
			}
			if env.Subscription != id || env.ResourceVersion != rv || env.Event.Type != protocol.Modified || string(env.Event.Object) != string(obj) {
				t.Errorf("id %q, rv %q: decoded %+v", id, rv, env)
			}
		}
	}
}
