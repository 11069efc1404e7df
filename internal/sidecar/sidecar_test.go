package sidecar_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

var ctx = context.Background()

func mustCreate(t *testing.T, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := hub.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

func setLabel(t *testing.T, ns, name, key, value string) {
	t.Helper()
	s := &fleetv1.NodeSnapshot{}
	if err := hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); err != nil {
		t.Fatal(err)
	}
	if s.Labels == nil {
		s.Labels = map[string]string{}
	}
	s.Labels[key] = value
	if err := hub.Update(ctx, s); err != nil {
		t.Fatal(err)
	}
}

func deleteSnapshot(t *testing.T, ns, name string) {
	t.Helper()
	if err := hub.Delete(ctx, &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
		t.Fatal(err)
	}
}

func subscribe(id, ns string, clusters ...string) string {
	m := map[string]any{"type": "subscribe", "id": id, "namespace": ns}
	if len(clusters) > 0 {
		m["clusters"] = clusters
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestInitialStateBookmarkAndLiveChanges(t *testing.T) {
	ns := aliceNamespace
	mustCreate(t, framework.NewSnapshot(ns, "live1", "n1"), framework.NewSnapshot(ns, "live1", "n2"), framework.NewSnapshot(ns, "live2", "n1"))
	ts := startSidecar(t, sidecar.Options{})
	c := dial(t, ts, aliceToken, viaHeader)

	c.send(subscribe("all", ns, "live1", "live2"))
	initial := c.untilBookmark("all")
	if got := names(initial); !slices.Equal(got, []string{"all ADDED live1.n1", "all ADDED live1.n2", "all ADDED live2.n1"}) {
		t.Fatalf("initial state: %v", got)
	}
	for _, e := range initial {
		if e.RV != "" {
			t.Errorf("initial ADDED %s carries a resume point %q", e.Name, e.RV)
		}
	}
	c.send(subscribe("two", ns, "live2"))
	if got := names(c.untilBookmark("two")); !slices.Equal(got, []string{"two ADDED live2.n1"}) {
		t.Fatalf("cluster filter initial state: %v", got)
	}

	mustCreate(t, framework.NewSnapshot(ns, "live1", "n3"))
	if e := c.mustNext(); e.String() != "all ADDED live1.n3" || e.RV == "" {
		t.Fatalf("got %v (rv %q), want ADDED live1.n3 with a resume point", e, e.RV)
	}
	setLabel(t, ns, "live1.n1", "color", "blue")
	if e := c.mustNext(); e.String() != "all MODIFIED live1.n1" || e.Labels["color"] != "blue" {
		t.Fatalf("got %v %v, want MODIFIED live1.n1 with the label", e, e.Labels)
	}
	deleteSnapshot(t, ns, "live2.n1")
	got := []string{c.mustNext().String(), c.mustNext().String()}
	slices.Sort(got)
	if !slices.Equal(got, []string{"all DELETED live2.n1", "two DELETED live2.n1"}) {
		t.Fatalf("delete: %v", got)
	}

	c.send(`{"type":"unsubscribe","id":"all"}`)
	setLabel(t, ns, "live1.n2", "color", "red")
	c.quiet(500 * time.Millisecond)
	mustCreate(t, framework.NewSnapshot(ns, "live2", "n9"))
	if e := c.mustNext(); e.String() != "two ADDED live2.n9" {
		t.Fatalf("after unsubscribe got %v", e)
	}
}

// A sidecar that has not listed the hub yet holds state of nothing: it must
// never answer with an empty "complete" state. The hub is made slow to
// answer the sidecar's first NodeSnapshot list (a list, or a watch that
// streams the initial list, as client-go's reflector may use).
func TestNoAnswerBeforeTheFirstList(t *testing.T) {
	ns := aliceNamespace
	mustCreate(t, framework.NewSnapshot(ns, "slowlist", "n1"), framework.NewSnapshot(ns, "slowlist", "n2"))
	release := make(chan struct{})
	delayLists := func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if strings.HasSuffix(req.URL.Path, "/nodesnapshots") {
				select {
				case <-release:
				case <-req.Context().Done():
					return nil, req.Context().Err()
				}
			}
			return rt.RoundTrip(req)
		})
	}
	const syncWait = 2 * time.Second
	ts := framework.StartSidecar(t, hubCfg, sidecar.Options{SyncWait: syncWait}, framework.SidecarOptions{Wrap: delayLists, NoWait: true})

	// While the list is held back, the upgrade and lists wait SyncWait,
	// then answer 503 with a Retry-After.
	start := time.Now()
	_, resp, err := dialRaw(ctx, ts, aliceToken, viaHeader, "")
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dial before the first list: err %v, response %+v; want HTTP 503 with Retry-After", err, resp)
	}
	if waited := time.Since(start); waited < syncWait/2 {
		t.Errorf("the upgrade was refused after %s, without waiting for the list", waited)
	}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/namespaces/"+ns+"/nodesnapshots", nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	lresp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(lresp.Body)
	lresp.Body.Close()
	if lresp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"kind":"Status"`) {
		t.Errorf("list before the first list: %d %s, want a 503 Status", lresp.StatusCode, body)
	}

	// A client that connects while the list is on its way is held, then
	// gets the whole state.
	go func() {
		time.Sleep(syncWait / 4)
		close(release)
	}()
	c := dial(t, ts, aliceToken, viaHeader)
	c.send(subscribe("s", ns, "slowlist"))
	var got []string
	for {
		e := c.mustNext()
		if e.Type == protocol.Bookmark && e.InitialEnd {
			if e.RV == "" || e.RV == "0" {
				t.Errorf("initial-events-end at resourceVersion %q", e.RV)
			}
			break
		}
		got = append(got, e.String())
	}
	if !slices.Equal(got, []string{"s ADDED slowlist.n1", "s ADDED slowlist.n2"}) {
		t.Fatalf("state before the bookmark: %v", got)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestManagedClusterSubscription(t *testing.T) {
	ns := aliceNamespace
	mustCreate(t, framework.NewManagedCluster(ns, "mcsub"))
	ts := startSidecar(t, sidecar.Options{})
	c := dial(t, ts, aliceToken, viaHeader)
	c.send(`{"type":"subscribe","id":"mc","kind":"ManagedCluster","namespace":"team-a","clusters":["mcsub"]}`)
	if got := names(c.untilBookmark("mc")); !slices.Equal(got, []string{"mc ADDED mcsub"}) {
		t.Fatalf("initial clusters: %v", got)
	}
}

func TestAuthentication(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{OriginPatterns: []string{"ui.example.com"}})
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	for name, tok := range map[string]string{"no token": "", "bad token": "not-a-token"} {
		_, resp, err := dialRaw(dctx, ts, tok, viaHeader, "")
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: want 401, got %v %v", name, resp, err)
		}
	}
	if got := ts.Metric(t, "nodemirror_sidecar_auth_denials_total", "reason", "unauthenticated"); got != 2 {
		t.Errorf("unauthenticated denials = %v, want 2", got)
	}

	// Browsers send the token as a subprotocol; the sidecar must answer
	// with its own subprotocol, never echo the token.
	conn, _, err := dialRaw(dctx, ts, aliceToken, viaSubprotocol, "")
	if err != nil {
		t.Fatalf("subprotocol token: %v", err)
	}
	if conn.Subprotocol() != protocol.Subprotocol {
		t.Errorf("negotiated subprotocol %q", conn.Subprotocol())
	}
	_ = conn.CloseNow()

	_, resp, err := dialRaw(dctx, ts, aliceToken, viaHeader, "https://evil.example.org")
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin: want 403, got %v %v", resp, err)
	}
	conn, _, err = dialRaw(dctx, ts, aliceToken, viaSubprotocol, "https://ui.example.com")
	if err != nil {
		t.Errorf("allowed origin refused: %v", err)
	} else {
		_ = conn.CloseNow()
	}
}

func TestAuthorization(t *testing.T) {
	mustCreate(t, framework.NewSnapshot("team-a", "authz", "n1"), framework.NewSnapshot("team-b", "authz", "n1"))
	ts := startSidecar(t, sidecar.Options{})
	c := dial(t, ts, aliceToken, viaSubprotocol)

	c.send(subscribe("a", "team-a", "authz"))
	if got := names(c.untilBookmark("a")); !slices.Equal(got, []string{"a ADDED authz.n1"}) {
		t.Fatalf("team-a: %v", got)
	}
	c.send(subscribe("b", "team-b", "authz"))
	e := c.mustNext()
	if e.Sub != "b" || e.Type != protocol.Error || e.Code != http.StatusForbidden || e.Reason != string(metav1.StatusReasonForbidden) {
		t.Fatalf("team-b: got %+v, want a 403 ERROR for b", e)
	}
	c.send(subscribe("all", "", "authz"))
	if e := c.mustNext(); e.Sub != "all" || e.Code != http.StatusForbidden {
		t.Fatalf("all namespaces: got %+v, want 403", e)
	}
	// The connection is still usable and team-a still flows.
	setLabel(t, "team-a", "authz.n1", "k", "v")
	if e := c.mustNext(); e.String() != "a MODIFIED authz.n1" {
		t.Fatalf("after 403: %v", e)
	}
	setLabel(t, "team-b", "authz.n1", "k", "v")
	c.quiet(300 * time.Millisecond)

	admin := dial(t, ts, adminToken, viaHeader)
	admin.send(subscribe("all", "", "authz"))
	if got := names(admin.untilBookmark("all")); !slices.Equal(got, []string{"all ADDED authz.n1", "all ADDED authz.n1"}) {
		t.Fatalf("admin, all namespaces: %v", got)
	}
}

func TestBadMessagesGetErrorsAndTheConnectionStays(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{MaxSubscriptionsPerConn: 2})
	c := dial(t, ts, aliceToken, viaHeader)
	for _, tc := range []struct {
		msg  string
		sub  string
		code int32
	}{
		{`{"type":`, "", http.StatusBadRequest},
		{`{"type":"publish","id":"x"}`, "x", http.StatusBadRequest},
		{`{"type":"subscribe","id":"x","namespace":"team-a","extra":1}`, "", http.StatusBadRequest},
		{`{"type":"subscribe","id":"x","namespace":"` + strings.Repeat("a", 5000) + `"}`, "", http.StatusRequestEntityTooLarge},
		{`{"type":"unsubscribe","id":"never"}`, "never", http.StatusNotFound},
		{`{"type":"subscribe","id":"x","namespace":"team-a","resourceVersion":"abc"}`, "x", http.StatusBadRequest},
	} {
		c.send(tc.msg)
		e := c.mustNext()
		if e.Type != protocol.Error || e.Sub != tc.sub || e.Code != tc.code {
			t.Errorf("%.60s: got %+v, want ERROR %d for %q", tc.msg, e, tc.code, tc.sub)
		}
	}
	c.send(subscribe("s1", "team-a", "none"))
	c.untilBookmark("s1")
	c.send(subscribe("s1", "team-a", "none"))
	if e := c.mustNext(); e.Code != http.StatusConflict {
		t.Errorf("duplicate id: %+v", e)
	}
	c.send(subscribe("s2", "team-a", "none"))
	c.untilBookmark("s2")
	c.send(subscribe("s3", "team-a", "none"))
	if e := c.mustNext(); e.Code != http.StatusTooManyRequests || e.Sub != "s3" {
		t.Errorf("third subscription: %+v", e)
	}
	// A message past the hard limit closes the connection (1009); the
	// sidecar itself stays up.
	c.send(`{"type":"subscribe","id":"big","namespace":"` + strings.Repeat("a", protocol.HardMessageBytes) + `"}`)
	if _, err := c.next(5 * time.Second); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("huge message: want close 1009, got %v", err)
	}
	d := dial(t, ts, aliceToken, viaHeader)
	d.send(subscribe("s", "team-a", "none"))
	d.untilBookmark("s")
}

func TestResume(t *testing.T) {
	ns := aliceNamespace
	mustCreate(t, framework.NewSnapshot(ns, "res", "a"), framework.NewSnapshot(ns, "res", "b"), framework.NewSnapshot(ns, "res", "c"), framework.NewSnapshot(ns, "res", "d"))
	ts := startSidecar(t, sidecar.Options{HistorySize: 1000})
	c := dial(t, ts, aliceToken, viaHeader)
	c.send(subscribe("s", ns, "res"))
	if n := len(c.untilBookmark("s")); n != 4 {
		t.Fatalf("initial %d objects", n)
	}
	resumeFrom := c.lastRV
	if resumeFrom == "" {
		t.Fatal("the initial BOOKMARK carried no resourceVersion")
	}
	_ = c.conn.Close(websocket.StatusNormalClosure, "")

	// While disconnected: b changes twice, c goes, e appears.
	setLabel(t, ns, "res.b", "x", "1")
	setLabel(t, ns, "res.b", "x", "2")
	deleteSnapshot(t, ns, "res.c")
	mustCreate(t, framework.NewSnapshot(ns, "res", "e"))
	framework.WaitFor(t, 5*time.Second, "sidecar sees res.e", func() bool { return sidecarHas(t, ts, ns, "res.e") })

	r := dial(t, ts, aliceToken, viaHeader)
	r.send(fmt.Sprintf(`{"type":"subscribe","id":"s","namespace":%q,"clusters":["res"],"resourceVersion":%q}`, ns, resumeFrom))
	missed := r.untilBookmark("s")
	if got := names(missed); !slices.Equal(got, []string{"s MODIFIED res.b", "s DELETED res.c", "s ADDED res.e"}) {
		t.Fatalf("resume: got %v, want exactly the missed changes", got)
	}
	if missed[0].Labels["x"] != "2" {
		t.Errorf("conflated MODIFIED carries %v, want the latest state", missed[0].Labels)
	}

	old := dial(t, ts, aliceToken, viaHeader)
	old.send(fmt.Sprintf(`{"type":"subscribe","id":"s","namespace":%q,"clusters":["res"],"resourceVersion":"1"}`, ns))
	e := old.mustNext()
	if e.Type != protocol.Error || e.Code != http.StatusGone || e.Reason != string(metav1.StatusReasonExpired) {
		t.Fatalf("too old: got %+v, want 410 Expired", e)
	}
	if got := names(old.untilBookmark("s")); !slices.Equal(got, []string{"s ADDED res.a", "s ADDED res.b", "s ADDED res.d", "s ADDED res.e"}) {
		t.Fatalf("start over: %v", got)
	}
}

func sidecarHas(t *testing.T, ts *testSidecar, ns, name string) bool {
	for _, s := range sidecarList(t, ts, ns) {
		if s.Name == name {
			return true
		}
	}
	return false
}

// sidecarList lists a namespace's snapshots through the sidecar's HTTP
// API, as alice; nil if the sidecar cannot be reached.
func sidecarList(t *testing.T, ts *testSidecar, ns string) []fleetv1.NodeSnapshot {
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/namespaces/"+ns+"/nodesnapshots", nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var list fleetv1.NodeSnapshotList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestOneHubWatchPerKindWhateverTheClients(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{MaxConnsPerUser: 200})
	clients := make([]*wsClient, 100)
	for i := range clients {
		clients[i] = dial(t, ts, aliceToken, viaHeader)
		clients[i].send(subscribe("s", "team-a", "fan"))
		clients[i].send(`{"type":"subscribe","id":"m","kind":"ManagedCluster","namespace":"team-a"}`)
	}
	for _, c := range clients {
		c.untilBookmark("s")
	}
	mustCreate(t, framework.NewSnapshot("team-a", "fan", "n1"))
	for _, c := range clients {
		for {
			if e := c.mustNext(); e.String() == "s ADDED fan.n1" {
				break
			}
		}
	}
	if got := ts.Metric(t, "nodemirror_sidecar_clients"); got != 100 {
		t.Errorf("clients gauge = %v", got)
	}
	if got := ts.Metric(t, "nodemirror_sidecar_subscriptions"); got != 200 {
		t.Errorf("subscriptions gauge = %v", got)
	}
	for _, res := range []string{"nodesnapshots", "managedclusters", "nodeoperations"} {
		if got := ts.Requests.Count("WATCH", "", res); got != 1 {
			t.Errorf("hub watches on %s = %d, want 1", res, got)
		}
		if got := ts.Requests.OpenWatches(res); got != 1 {
			t.Errorf("open hub watches on %s = %d, want 1", res, got)
		}
		// With streaming lists the watch brings the initial state itself.
		if got := ts.Requests.Count(http.MethodGet, "", res); got > 1 {
			t.Errorf("hub lists of %s = %d, want at most 1", res, got)
		}
	}
}

func TestConnectionLimitPerUser(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{MaxConnsPerUser: 2})
	dial(t, ts, aliceToken, viaHeader)
	dial(t, ts, aliceToken, viaHeader)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, resp, err := dialRaw(dctx, ts, aliceToken, viaHeader, ""); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection: want 429, got %v %v", resp, err)
	}
	dial(t, ts, adminToken, viaHeader) // another user is not affected
}

func TestDeadPeerIsClosed(t *testing.T) {
	// Pings every second, each answered within half of it: short enough for
	// a quick test, long enough for a loaded machine to answer in time.
	ts := startSidecar(t, sidecar.Options{PingInterval: time.Second})
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// This client never reads, so it never answers a ping.
	conn, _, err := dialRaw(dctx, ts, aliceToken, viaHeader, "")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	framework.WaitFor(t, 5*time.Second, "client counted", func() bool { return ts.Metric(t, "nodemirror_sidecar_clients") == 1 })
	framework.WaitFor(t, 10*time.Second, "dead peer closed", func() bool { return ts.Metric(t, "nodemirror_sidecar_clients") == 0 })
	live := dial(t, ts, aliceToken, viaHeader) // a reading client answers pings and stays
	live.send(subscribe("s", "team-a", "none"))
	live.untilBookmark("s")
	time.Sleep(3 * time.Second) // three pings

	if got := ts.Metric(t, "nodemirror_sidecar_clients"); got != 1 {
		t.Fatalf("a live client was closed: clients = %v", got)
	}
}

func TestSlowClientDoesNotDelayOthers(t *testing.T) {
	const objects, rounds = 150, 6
	if err := framework.CreateSnapshots(ctx, hub, "team-b", "slow", objects); err != nil {
		t.Fatal(err)
	}
	// The slow client's writes block once the socket buffers are full; a
	// long write timeout keeps it connected, so its queue is what gives.
	ts := startSidecar(t, sidecar.Options{OutboxLimit: 100, WriteTimeout: time.Minute, PingInterval: time.Hour})
	slow := dialSilent(t, ts, adminToken, subscribe("s", "team-b", "slow"))
	fast := dial(t, ts, adminToken, viaHeader)
	fast.send(subscribe("s", "team-b", "slow"))
	fast.untilBookmark("s")

	// Churn every object with a 16 KB annotation, several times over: far
	// more than socket buffers hold, while the slow client reads nothing.
	var worst time.Duration
	for round := range rounds {
		pad := strings.Repeat(fmt.Sprint(round), 16<<10)
		for i := range objects {
			setAnnotation(t, "team-b", fmt.Sprintf("slow.node-%d", i), "pad", pad)
		}
		// The fast client keeps up: a marker change reaches it promptly.
		setLabel(t, "team-b", "slow.node-0", "marker", fmt.Sprint(round))
		start := time.Now()
		for {
			if e := fast.mustNext(); e.Name == "slow.node-0" && e.Labels["marker"] == fmt.Sprint(round) {
				break
			}
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("fast client: worst marker delay %s while the slow client read nothing", worst)
	if worst > 5*time.Second {
		t.Errorf("fast client was held up for %s", worst)
	}
	if got := ts.Metric(t, "nodemirror_sidecar_events_conflated_total"); got == 0 {
		t.Error("nothing was conflated for the slow client")
	}

	// The slow client reads again: what was buffered, then the resume code.
	lastRV := ""
	var closed error
	for closed == nil {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, data, err := slow.Read(rctx)
		cancel()
		if err != nil {
			closed = err
			break
		}
		var env protocol.Envelope
		_ = json.Unmarshal(data, &env)
		if env.ResourceVersion != "" {
			lastRV = env.ResourceVersion
		}
	}
	if websocket.CloseStatus(closed) != protocol.CloseResume {
		t.Fatalf("slow client: want close %d, got %v", protocol.CloseResume, closed)
	}
	if ts.Metric(t, "nodemirror_sidecar_slow_client_closes_total") != 1 {
		t.Error("slow close not counted")
	}
	// Resuming from the last resourceVersion it got brings it up to date.
	r := dial(t, ts, adminToken, viaHeader)
	r.send(fmt.Sprintf(`{"type":"subscribe","id":"s","namespace":"team-b","clusters":["slow"],"resourceVersion":%q}`, lastRV))
	marker := ""
	for _, e := range r.untilBookmark("s") {
		if e.Name == "slow.node-0" && e.Labels["marker"] != "" {
			marker = e.Labels["marker"]
		}
	}
	if marker != fmt.Sprint(rounds-1) {
		t.Fatalf("resumed slow client: marker %q, want %d", marker, rounds-1)
	}
}

func setAnnotation(t *testing.T, ns, name, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	s := &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := hub.Patch(ctx, s, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPReads(t *testing.T) {
	mustCreate(t, framework.NewSnapshot("team-a", "http1", "n1"), framework.NewSnapshot("team-a", "http2", "n1"), framework.NewManagedCluster("team-a", "http1"))
	ts := startSidecar(t, sidecar.Options{})
	framework.WaitFor(t, 5*time.Second, "snapshots listed", func() bool { return sidecarHas(t, ts, "team-a", "http2.n1") })
	read := func(path, token string) (int, []byte) {
		code, body, _ := get(t, ts.URL+path, token)
		return code, []byte(body)
	}
	code, body := read("/api/v1/namespaces/team-a/nodesnapshots?cluster=http1", aliceToken)
	var list fleetv1.NodeSnapshotList
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
		t.Fatalf("list: %d %v %s", code, err, body)
	}
	if list.Kind != "NodeSnapshotList" || list.ResourceVersion == "" || len(list.Items) != 1 || list.Items[0].Name != "http1.n1" || list.Items[0].Status.Columns.Status != "Ready" {
		t.Fatalf("list = %+v", list)
	}
	code, body = read("/api/v1/namespaces/team-a/managedclusters", aliceToken)
	if code != http.StatusOK || !strings.Contains(string(body), `"kind":"ManagedClusterList"`) || !strings.Contains(string(body), `"name":"http1"`) {
		t.Fatalf("clusters: %d %s", code, body)
	}
	for _, tc := range []struct {
		path, token string
		code        int
	}{
		{"/api/v1/namespaces/team-b/nodesnapshots", aliceToken, http.StatusForbidden},
		{"/api/v1/nodesnapshots", aliceToken, http.StatusForbidden},
		{"/api/v1/nodesnapshots", adminToken, http.StatusOK},
		{"/api/v1/namespaces/team-a/nodesnapshots", "", http.StatusUnauthorized},
		{"/api/v1/namespaces/team-a/pods", aliceToken, http.StatusNotFound},
		{"/api/v1/namespaces/Team_A/nodesnapshots", aliceToken, http.StatusBadRequest},
	} {
		code, body := read(tc.path, tc.token)
		if code != tc.code {
			t.Errorf("GET %s: %d %s, want %d", tc.path, code, body, tc.code)
		}
		if code != http.StatusOK && !strings.Contains(string(body), `"kind":"Status"`) {
			t.Errorf("GET %s: error is not a Status: %s", tc.path, body)
		}
	}
	if code, body := read("/api/v1/whoami", aliceToken); code != http.StatusOK || !strings.Contains(string(body), "system:serviceaccount:team-a:alice") {
		t.Errorf("whoami: %d %s", code, body)
	}
}

func TestRevokedAccessEndsTheStream(t *testing.T) {
	mustCreate(t, framework.NewSnapshot("team-a", "revoke", "n1"))
	ts := startSidecar(t, sidecar.Options{AuthCacheTTL: 100 * time.Millisecond, ReviewInterval: 200 * time.Millisecond})
	ctx := context.Background()
	// bob may list in team-a through his own RoleBinding, which is revoked.
	bob, err := framework.ViewerToken(ctx, hubCS, "team-a", "bob")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, ts, bob, viaHeader)
	c.send(subscribe("s", "team-a", "revoke"))
	c.untilBookmark("s")

	if err := hub.Delete(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "bob-views"}}); err != nil {
		t.Fatal(err)
	}
	e := c.mustNext()
	if e.Sub != "s" || e.Type != protocol.Error || e.Code != http.StatusForbidden {
		t.Fatalf("after the RoleBinding went: %+v, want a 403 ERROR ending the subscription", e)
	}
	setLabel(t, "team-a", "revoke.n1", "after", "revocation")
	c.quiet(500 * time.Millisecond)

	// Deleting the ServiceAccount invalidates its token: the connection closes.
	if err := hub.Delete(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "bob"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.next(10 * time.Second); websocket.CloseStatus(err) != protocol.CloseUnauthorized {
		t.Fatalf("after the token went: want close %d, got %v", protocol.CloseUnauthorized, err)
	}
}
