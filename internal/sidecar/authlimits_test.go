package sidecar_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// get does one GET against the sidecar with a bearer token ("" for none)
// and returns the status, body and headers.
func get(t *testing.T, url, token string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// New tokens from one address are rate limited before they cost the hub
// a TokenReview; tokens already reviewed are not.
func TestPerIPLimitBeforeTokenReview(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{PerIPAuthQPS: 0.001, PerIPAuthBurst: 3})
	whoami := ts.URL + "/api/v1/whoami"
	if code, body, _ := get(t, whoami, aliceToken); code != http.StatusOK {
		t.Fatalf("first token: %d %s", code, body)
	}
	for i := range 2 {
		if code, body, _ := get(t, whoami, fmt.Sprintf("bad-token-%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("bad token %d: %d %s, want 401", i, code, body)
		}
	}
	code, body, h := get(t, whoami, "bad-token-2")
	if code != http.StatusTooManyRequests || !strings.Contains(body, `"kind":"Status"`) || !strings.Contains(body, `"reason":"TooManyRequests"`) || h.Get("Retry-After") == "" {
		t.Fatalf("fourth new token: %d %s %v, want a 429 Status with Retry-After", code, body, h)
	}
	// The websocket upgrade is limited the same way.
	if _, resp, err := dialRaw(ctx, ts, "bad-token-3", viaHeader, ""); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("upgrade with a new token: %v %v, want 429", resp, err)
	}
	// Answers in the cache cost the hub nothing and are not limited.
	if code, body, _ := get(t, whoami, aliceToken); code != http.StatusOK {
		t.Errorf("reviewed token: %d %s", code, body)
	}
	if code, _, _ := get(t, whoami, "bad-token-0"); code != http.StatusUnauthorized {
		t.Errorf("rejected token again: %d, want 401 from the cache", code)
	}
	if got := ts.Requests.Count(http.MethodPost, "", "tokenreviews"); got != 3 {
		t.Errorf("%d TokenReviews, want 3 (the burst)", got)
	}
	if got := ts.Metric(t, "nodemirror_sidecar_auth_denials_total", "reason", "rate_limited"); got != 2 {
		t.Errorf("rate_limited denials = %v, want 2", got)
	}
}

// TokenReviews and SubjectAccessReviews have budgets of their own: with
// the TokenReview budget spent, users already in are still authorized.
func TestReviewBudgetsAreSeparate(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{TokenReviewQPS: 0.001, TokenReviewBurst: 1, AccessReviewQPS: 1000, AccessReviewBurst: 1000, AuthCacheTTL: time.Hour})
	if code, body, _ := get(t, ts.URL+"/api/v1/whoami", adminToken); code != http.StatusOK {
		t.Fatalf("admin: %d %s", code, body)
	}
	// A new token waits for the TokenReview budget, spent on the admin's...
	c := &http.Client{Timeout: 2 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a token past the TokenReview budget was answered %d, want it held", resp.StatusCode)
	}
	// ... while access reviews, one per namespace, go through.
	for i := range 10 {
		if code, body, _ := get(t, fmt.Sprintf("%s/api/v1/namespaces/budget-%d/nodesnapshots", ts.URL, i), adminToken); code != http.StatusOK {
			t.Fatalf("list %d: %d %s", i, code, body)
		}
	}
	if got := ts.Requests.Count(http.MethodPost, "", "subjectaccessreviews"); got != 10 {
		t.Errorf("%d SubjectAccessReviews, want 10", got)
	}
}

// A subscription is a watch and needs the verb watch; a list needs list.
func TestSubscriptionsNeedWatch(t *testing.T) {
	objs := []client.Object{
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "list-only"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{fleetv1.GroupVersion.Group}, Resources: []string{"nodesnapshots"}, Verbs: []string{"list"}}},
		},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "lister"}},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "lister"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "list-only"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "team-a", Name: "lister"}},
		},
	}
	mustCreate(t, objs...)
	token, err := framework.Token(ctx, hubCS, "team-a", "lister")
	if err != nil {
		t.Fatal(err)
	}
	ts := startSidecar(t, sidecar.Options{})
	if code, body, _ := get(t, ts.URL+"/api/v1/namespaces/team-a/nodesnapshots", token); code != http.StatusOK {
		t.Fatalf("list with list: %d %s", code, body)
	}
	c := dial(t, ts, token, viaHeader)
	c.send(subscribe("s", "team-a"))
	e := c.mustNext()
	if e.Sub != "s" || e.Code != http.StatusForbidden {
		t.Fatalf("subscription without watch: %+v, want 403", e)
	}
	var st metav1.Status
	_ = json.Unmarshal(e.Raw.Event.Object, &st)
	if !strings.Contains(st.Message, "cannot watch") {
		t.Errorf("message %q does not say watch", st.Message)
	}
}

// With --token-audiences, only tokens meant for the sidecar are accepted:
// a token for the hub's API or for another audience is refused.
func TestTokenAudiences(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{TokenAudiences: []string{"nodemirror-sidecar"}})
	tokenFor := func(audiences ...string) string {
		tr, err := hubCS.CoreV1().ServiceAccounts("team-a").CreateToken(ctx, "alice",
			&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: audiences}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	whoami := ts.URL + "/api/v1/whoami"
	if code, body, _ := get(t, whoami, tokenFor("nodemirror-sidecar")); code != http.StatusOK || !strings.Contains(body, "system:serviceaccount:team-a:alice") {
		t.Errorf("token for the sidecar: %d %s", code, body)
	}
	if code, body, _ := get(t, whoami, tokenFor("something-else")); code != http.StatusUnauthorized {
		t.Errorf("token for another audience: %d %s, want 401", code, body)
	}
	if code, body, _ := get(t, whoami, aliceToken); code != http.StatusUnauthorized {
		t.Errorf("token for the hub API: %d %s, want 401", code, body)
	}
	c := dial(t, ts, tokenFor("other", "nodemirror-sidecar"), viaSubprotocol)
	c.send(subscribe("s", "team-a", "none"))
	c.untilBookmark("s")
}

// A refused upgrade does not repeat the request's headers at length.
func TestRefusedUpgradeEchoesLittle(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{})
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/watch", nil)
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Origin", "https://"+strings.Repeat("a", 8<<10)+".example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(body) > 1024 {
		t.Errorf("a foreign 8 KiB Origin: %d with %d bytes: %.100s", resp.StatusCode, len(body), body)
	}
}

func TestUIContentSecurityPolicy(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{})
	_, _, h := get(t, ts.URL+"/", "")
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "connect-src 'self';") || strings.Contains(csp, "ws:") {
		t.Errorf("Content-Security-Policy %q: want connect-src 'self' alone", csp)
	}
}

// Without authentication the sidecar answers only requests that name its
// own address: a page whose DNS name an attacker rebinds to it must not
// read it.
func TestInsecureNoAuthChecksHost(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{InsecureNoAuth: true})
	_, port, _ := net.SplitHostPort(ts.Addr)
	for host, want := range map[string]int{
		ts.Addr:                    http.StatusOK,
		"localhost:" + port:        http.StatusOK,
		"ui.localhost:" + port:     http.StatusOK,
		"evil.example:" + port:     http.StatusForbidden,
		"localhost:1":              http.StatusForbidden,
		"127.0.0.2:" + port:        http.StatusForbidden,
		"evil.example":             http.StatusForbidden,
		"127.0.0.1.nip.io:" + port: http.StatusForbidden,
	} {
		for _, path := range []string{"/api/v1/namespaces/team-a/nodesnapshots", "/"} {
			req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("Host %s, %s: %d %.200s, want %d", host, path, resp.StatusCode, b, want)
			}
			if want == http.StatusForbidden && !strings.Contains(string(b), `"kind":"Status"`) {
				t.Errorf("Host %s: not a Status: %.200s", host, b)
			}
		}
	}
	opts := &websocket.DialOptions{Host: "evil.example:" + port}
	if _, resp, err := websocket.Dial(ctx, strings.Replace(ts.URL, "http://", "ws://", 1)+"/api/v1/watch", opts); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("websocket with a foreign Host: %v %v, want 403", resp, err)
	}
}

// tokenWebhook is a token authentication webhook for a hub API server: it
// answers TokenReviews from a table the test changes.
type tokenWebhook struct {
	mu    sync.Mutex
	users map[string]authnv1.UserInfo
	calls atomic.Int64
	addr  string
}

func startTokenWebhook(t *testing.T) *tokenWebhook {
	wh := &tokenWebhook{users: map[string]authnv1.UserInfo{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wh.addr = l.Addr().String()
	srv := &http.Server{Handler: wh, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return wh
}

func (wh *tokenWebhook) set(token string, u authnv1.UserInfo) {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	wh.users[token] = u
}

func (wh *tokenWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wh.calls.Add(1)
	var review authnv1.TokenReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	wh.mu.Lock()
	u, ok := wh.users[review.Spec.Token]
	wh.mu.Unlock()
	review.Status = authnv1.TokenReviewStatus{Authenticated: ok, User: u}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// kubeconfig is the file the API server's --authentication-token-webhook-config-file names.
func (wh *tokenWebhook) kubeconfig(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "webhook.kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: webhook
  cluster:
    server: http://%s/authenticate
users:
- name: apiserver
  user: {}
contexts:
- name: webhook
  context: {cluster: webhook, user: apiserver}
current-context: webhook
`, wh.addr)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The periodic review takes the user's groups afresh from the hub: leaving
// the group a RoleBinding grants ends the subscription it allowed, and a
// token that now names another user closes the connection. Users come from
// a token webhook on a hub of this test's own.
func TestReviewFollowsGroupMembership(t *testing.T) {
	wh := startTokenWebhook(t)
	viewer := authnv1.UserInfo{Username: "carol", UID: "carol-1", Groups: []string{"fleet-viewers"}}
	wh.set("carol-token", viewer)
	wh.set("dave-token", authnv1.UserInfo{Username: "dave", UID: "dave-1", Groups: []string{"fleet-viewers"}})

	env := framework.NewHub()
	env.ControlPlane.GetAPIServer().Configure().
		Set("authentication-token-webhook-config-file", wh.kubeconfig(t)).
		Set("authentication-token-webhook-version", "v1").
		Set("authentication-token-webhook-cache-ttl", "0s")
	cfgs, err := framework.StartAll(env)
	t.Cleanup(func() { framework.StopAll(env) })
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfgs[0])
	cl, err := client.New(cfgs[0], client.Options{Scheme: framework.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := framework.ApplyUserRoles(ctx, cs); err != nil {
		t.Fatal(err)
	}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "fleet-viewers"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: framework.ViewerRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "fleet-viewers"}},
		},
		framework.NewSnapshot("fleet", "grp", "n1"),
	} {
		if err := cl.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	ts := framework.StartSidecar(t, cfgs[0], sidecar.Options{AuthCacheTTL: 100 * time.Millisecond, ReviewInterval: 200 * time.Millisecond}, framework.SidecarOptions{})

	c := dial(t, ts, "carol-token", viaHeader)
	c.send(subscribe("s", "fleet", "grp"))
	if got := names(c.untilBookmark("s")); len(got) != 1 {
		t.Fatalf("carol's initial state: %v", got)
	}
	d := dial(t, ts, "dave-token", viaHeader)
	d.send(subscribe("s", "fleet", "grp"))
	d.untilBookmark("s")

	// Carol leaves the group: her next review ends the subscription. The
	// hub's API server itself caches a successful token authentication for
	// 10 s (a fixed TokenSuccessCacheTTL, whatever the webhook's TTL), so
	// the change reaches any review only after up to that long.
	viewer.Groups = nil
	wh.set("carol-token", viewer)
	e, err := c.next(30 * time.Second)
	if err != nil || e.Sub != "s" || e.Type != protocol.Error || e.Code != http.StatusForbidden {
		t.Fatalf("after leaving the group: %+v %v, want a 403 ERROR ending the subscription", e, err)
	}
	c.quiet(500 * time.Millisecond) // and nothing else: the connection stays
	// Dave's token now names another user (same name, new UID).
	wh.set("dave-token", authnv1.UserInfo{Username: "dave", UID: "dave-2", Groups: []string{"fleet-viewers"}})
	for {
		if _, err := d.next(30 * time.Second); err != nil {
			if websocket.CloseStatus(err) != protocol.CloseUnauthorized {
				t.Fatalf("after the token changed hands: want close %d, got %v", protocol.CloseUnauthorized, err)
			}
			break
		}
	}
	if wh.calls.Load() == 0 {
		t.Error("the webhook was never asked")
	}
}
