package sidecar_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// TestResumeOnAnotherReplica: sidecar replicas behind one Service each hold
// their own hub watch, so a client that reconnects may land on another
// replica than the one it resumed from. The resourceVersions are the hub's
// on every replica: the other replica answers with exactly the missed
// changes when its history covers the point, and otherwise with a 410 and
// a fresh state; never with a state that misses a change.
func TestResumeOnAnotherReplica(t *testing.T) {
	ns := aliceNamespace
	mustCreate(t, framework.NewSnapshot(ns, "rep", "a"), framework.NewSnapshot(ns, "rep", "b"), framework.NewSnapshot(ns, "rep", "c"))
	first := startSidecar(t, sidecar.Options{HistorySize: 1000})
	second := startSidecar(t, sidecar.Options{HistorySize: 1000})

	c := dial(t, first, aliceToken, viaHeader)
	c.send(subscribe("s", ns, "rep"))
	c.untilBookmark("s")
	setLabel(t, ns, "rep.a", "x", "1")
	if e := c.mustNext(); e.Type != protocol.Modified || e.Name != "rep.a" {
		t.Fatalf("live change: %v", e)
	}
	resumeFrom := c.lastRV
	_ = c.conn.Close(websocket.StatusNormalClosure, "")

	// While disconnected, b changes; both replicas see it.
	setLabel(t, ns, "rep.b", "x", "2")
	for _, ts := range []*testSidecar{first, second} {
		framework.WaitFor(t, 5*time.Second, "replica sees rep.b change", func() bool { return sidecarLabel(t, ts, ns, "rep.b", "x") == "2" })
	}
	// The second replica has watched all along: its history covers the
	// point, and it answers exactly as the first would.
	resumed := func(ts *testSidecar) []event {
		r := dial(t, ts, aliceToken, viaHeader)
		r.send(fmt.Sprintf(`{"type":"subscribe","id":"s","namespace":%q,"clusters":["rep"],"resourceVersion":%q}`, ns, resumeFrom))
		return r.untilBookmark("s")
	}
	onFirst, onSecond := resumed(first), resumed(second)
	if got, want := names(onSecond), []string{"s MODIFIED rep.b"}; !slices.Equal(got, want) || !slices.Equal(got, names(onFirst)) {
		t.Fatalf("resume on the other replica: %v, on the same: %v; want %v on both", got, names(onFirst), want)
	}

	// A replica started after the point holds no history before its own
	// list: 410, then the current state, c's change included.
	setLabel(t, ns, "rep.c", "x", "3")
	third := startSidecar(t, sidecar.Options{HistorySize: 1000})
	r := dial(t, third, aliceToken, viaHeader)
	r.send(fmt.Sprintf(`{"type":"subscribe","id":"s","namespace":%q,"clusters":["rep"],"resourceVersion":%q}`, ns, resumeFrom))
	if e := r.mustNext(); e.Type != protocol.Error || e.Code != http.StatusGone || e.Reason != string(metav1.StatusReasonExpired) {
		t.Fatalf("resume on a replica younger than the point: %+v, want 410 Expired", e)
	}
	state := r.untilBookmark("s")
	if got := names(state); !slices.Equal(got, []string{"s ADDED rep.a", "s ADDED rep.b", "s ADDED rep.c"}) {
		t.Fatalf("fresh state after the 410: %v", got)
	}
	for i, want := range []string{"1", "2", "3"} {
		if state[i].Labels["x"] != want {
			t.Errorf("%s in the fresh state has x=%q, want %q", state[i].Name, state[i].Labels["x"], want)
		}
	}
}

// sidecarLabel reads a snapshot's label through the sidecar's HTTP list.
func sidecarLabel(t *testing.T, ts *testSidecar, ns, name, key string) string {
	for _, s := range sidecarList(t, ts, ns) {
		if s.Name == name {
			return s.Labels[key]
		}
	}
	return ""
}
