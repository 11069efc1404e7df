package sidecar_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

var (
	editorOnce  sync.Once
	editorToken string
)

// editorTokenFor is a token of ServiceAccount team-a/carol, who edits team-a
// through the shipped roles: nodemirror-viewer and nodemirror-editor
// (what the built-in view and edit roles aggregate; envtest runs no
// aggregation controller, so they are bound directly).
func editorTokenFor(t *testing.T) string {
	t.Helper()
	editorOnce.Do(func() {
		tok, err := framework.ViewerToken(ctx, hubCS, aliceNamespace, "carol")
		if err != nil {
			t.Fatal(err)
		}
		if err := hub.Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: aliceNamespace, Name: "carol-edits"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "nodemirror-editor"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: aliceNamespace, Name: "carol"}},
		}); err != nil {
			t.Fatal(err)
		}
		editorToken = tok
	})
	if editorToken == "" {
		t.Fatal("no editor token")
	}
	return editorToken
}

type postOpts struct {
	token, contentType, origin string
	header                     http.Header
}

// post sends body to the create endpoint of namespace ns.
func post(t *testing.T, ts *testSidecar, ns, body string, o postOpts) (int, metav1.Status, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/v1/namespaces/"+ns+"/nodeoperations", strings.NewReader(body))
	for k, v := range o.header {
		req.Header[k] = v
	}
	if o.token != "" {
		req.Header.Set("Authorization", "Bearer "+o.token)
	}
	if o.contentType == "" {
		o.contentType = "application/json"
	}
	req.Header.Set("Content-Type", o.contentType)
	if o.origin != "" {
		req.Header.Set("Origin", o.origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var st metav1.Status
	_ = json.Unmarshal(raw, &st)
	return resp.StatusCode, st, raw
}

func cordonBody(name string, nodes ...string) string {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "fleet.nodemirror.io/v1alpha1", "kind": "NodeOperation",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{"action": "cordon", "clusters": map[string]any{"names": []string{"c1"}}, "nodes": map[string]any{"names": nodes}},
	})
	return string(b)
}

// The sidecar creates NodeOperations as the caller, never as itself: an
// editor's create succeeds, a viewer's is refused by the hub and the
// hub's Status relayed, and so is the CEL rule a spec breaks.
func TestCreateOperationWithTheUsersToken(t *testing.T) {
	ns := aliceNamespace
	carol := editorTokenFor(t)
	ts := startSidecar(t, sidecar.Options{MaxCreateBytes: 8 << 10})

	code, _, raw := post(t, ts, ns, cordonBody("create-carol", "n1", "n2"), postOpts{token: carol, origin: ts.URL})
	if code != http.StatusCreated {
		t.Fatalf("editor's create: %d %s", code, raw)
	}
	var answered fleetv1.NodeOperation
	if err := json.Unmarshal(raw, &answered); err != nil || answered.Name != "create-carol" || answered.UID == "" {
		t.Fatalf("answer %s: %v", raw, err)
	}
	op := &fleetv1.NodeOperation{}
	if err := hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: "create-carol"}, op); err != nil {
		t.Fatal(err)
	}
	if op.Spec.Action != fleetv1.ActionCordon || len(op.Spec.Nodes.Names) != 2 || len(op.ManagedFields) == 0 || op.ManagedFields[0].Manager != "nodemirror-sidecar" {
		t.Fatalf("created %+v, managed fields %+v", op.Spec, op.ManagedFields)
	}
	// Not through the sidecar's own hub client (whose ServiceAccount may
	// not create them anyway).
	if n := ts.Requests.Count(http.MethodPost, ns, "nodeoperations"); n != 0 {
		t.Errorf("the sidecar's own client created %d NodeOperations", n)
	}

	code, st, raw := post(t, ts, ns, cordonBody("create-alice", "n1"), postOpts{token: aliceToken})
	if code != http.StatusForbidden || st.Reason != metav1.StatusReasonForbidden || !strings.Contains(st.Message, "system:serviceaccount:team-a:alice") || !strings.Contains(st.Message, "cannot create") {
		t.Fatalf("viewer's create: %d %s", code, raw)
	}

	invalid := `{"metadata":{"name":"create-cel"},"spec":{"action":"label","clusters":{"names":["c1"]},"nodes":{"names":["n1"]}}}`
	code, st, raw = post(t, ts, ns, invalid, postOpts{token: carol})
	if code != http.StatusUnprocessableEntity || st.Reason != metav1.StatusReasonInvalid || !strings.Contains(st.Message, "labels is required for action label") {
		t.Fatalf("a spec breaking CEL: %d %s", code, raw)
	}
	if len(raw) > 2048 {
		t.Errorf("relayed Status of %d bytes", len(raw))
	}

	// Refusals before the hub is asked.
	huge := `{"metadata":{"name":"create-huge"},"spec":{"action":"cordon","clusters":{"names":["c1"]},"nodes":{"names":["` + strings.Repeat("n", 9<<10) + `"]}}}`
	for _, tc := range []struct {
		name, ns, body string
		o              postOpts
		code           int
	}{
		{"too large", ns, huge, postOpts{token: carol}, http.StatusRequestEntityTooLarge},
		{"no token", ns, cordonBody("create-x", "n1"), postOpts{}, http.StatusUnauthorized},
		{"token in a subprotocol only", ns, cordonBody("create-x", "n1"), postOpts{header: http.Header{"Sec-Websocket-Protocol": {protocol.BearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(carol))}}}, http.StatusUnauthorized},
		{"a rejected token", ns, cordonBody("create-x", "n1"), postOpts{token: "not-a-token"}, http.StatusUnauthorized},
		{"a form's content type", ns, "metadata=x", postOpts{token: carol, contentType: "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
		{"text/plain", ns, cordonBody("create-x", "n1"), postOpts{token: carol, contentType: "text/plain"}, http.StatusUnsupportedMediaType},
		{"a foreign origin", ns, cordonBody("create-x", "n1"), postOpts{token: carol, origin: "https://evil.example"}, http.StatusForbidden},
		{"not an object", ns, `[1]`, postOpts{token: carol}, http.StatusBadRequest},
		{"another kind", ns, `{"kind":"Pod","metadata":{"name":"x"}}`, postOpts{token: carol}, http.StatusBadRequest},
		{"another namespace in the body", ns, `{"metadata":{"name":"x","namespace":"team-b"}}`, postOpts{token: carol}, http.StatusBadRequest},
		{"bad namespace", "Team_A", cordonBody("create-x", "n1"), postOpts{token: carol}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, st, raw := post(t, ts, tc.ns, tc.body, tc.o)
			if code != tc.code || st.Kind != "Status" || int(st.Code) != tc.code || st.Message == "" {
				t.Fatalf("got %d %.300s, want %d with a Status", code, raw, tc.code)
			}
			if len(raw) > 2048 {
				t.Errorf("answer of %d bytes", len(raw))
			}
		})
	}
	if err := hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: "create-x"}, &fleetv1.NodeOperation{}); err == nil {
		t.Error("a refused request created create-x")
	}
	// A body whose length is not announced is cut at the limit too.
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/api/v1/namespaces/"+ns+"/nodeoperations", io.MultiReader(strings.NewReader(huge)))
	req.Header.Set("Authorization", "Bearer "+carol)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: %d", resp.StatusCode)
	}
}

func TestCreateRateLimitedPerUser(t *testing.T) {
	carol := editorTokenFor(t)
	ts := startSidecar(t, sidecar.Options{CreateQPS: 0.001, CreateBurst: 2})
	for i, want := range []int{http.StatusCreated, http.StatusCreated, http.StatusTooManyRequests} {
		code, _, raw := post(t, ts, aliceNamespace, cordonBody("ratelimit-"+string(rune('a'+i)), "n1"), postOpts{token: carol})
		if code != want {
			t.Fatalf("create %d: %d %s, want %d", i, code, raw, want)
		}
	}
	// Another user has a bucket of their own (alice's create reaches the
	// hub, which refuses it).
	if code, _, raw := post(t, ts, aliceNamespace, cordonBody("ratelimit-alice", "n1"), postOpts{token: aliceToken}); code != http.StatusForbidden {
		t.Fatalf("alice: %d %s", code, raw)
	}
}

// The access endpoint says, per namespace, whether the caller may create
// NodeOperations, and why not.
func TestAccessPerRole(t *testing.T) {
	carol := editorTokenFor(t)
	ts := startSidecar(t, sidecar.Options{})
	access := func(token, ns string) sidecar.Access {
		t.Helper()
		code, body, _ := get(t, ts.URL+"/api/v1/namespaces/"+ns+"/access", token)
		if code != http.StatusOK {
			t.Fatalf("access %s: %d %s", ns, code, body)
		}
		var a sidecar.Access
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	if a := access(carol, aliceNamespace); !a.CreateNodeOperations.Allowed || a.User != "system:serviceaccount:team-a:carol" {
		t.Errorf("editor in team-a: %+v", a)
	}
	if a := access(carol, "team-b"); a.CreateNodeOperations.Allowed || !strings.Contains(a.CreateNodeOperations.Reason, "cannot create") {
		t.Errorf("editor in team-b: %+v", a)
	}
	if a := access(aliceToken, aliceNamespace); a.CreateNodeOperations.Allowed || !strings.Contains(a.CreateNodeOperations.Reason, `cannot create resource "nodeoperations"`) {
		t.Errorf("viewer in team-a: %+v", a)
	}
	if code, _, _ := get(t, ts.URL+"/api/v1/namespaces/team-a/access", ""); code != http.StatusUnauthorized {
		t.Errorf("access without a token: %d", code)
	}
	// Answers are cached like the other reviews.
	before := ts.Requests.Count(http.MethodPost, "", "subjectaccessreviews")
	access(carol, aliceNamespace)
	if after := ts.Requests.Count(http.MethodPost, "", "subjectaccessreviews"); after != before {
		t.Errorf("a second access question cost %d more reviews", after-before)
	}
}

// --insecure-no-auth has no identity to act as: creates are refused, and
// the access endpoint says why.
func TestInsecureModeRefusesCreates(t *testing.T) {
	sc := framework.StartSidecar(t, hubCfg, sidecar.Options{InsecureNoAuth: true}, framework.SidecarOptions{})
	code, st, raw := post(t, sc, aliceNamespace, cordonBody("insecure", "n1"), postOpts{token: adminToken})
	if code != http.StatusForbidden || !strings.Contains(st.Message, "--insecure-no-auth") {
		t.Fatalf("create: %d %s", code, raw)
	}
	code, body, _ := get(t, sc.URL+"/api/v1/namespaces/team-a/access", "")
	var a sidecar.Access
	if err := json.Unmarshal([]byte(body), &a); code != http.StatusOK || err != nil || a.CreateNodeOperations.Allowed || !strings.Contains(a.CreateNodeOperations.Reason, "--insecure-no-auth") {
		t.Fatalf("access: %d %s", code, body)
	}
	if err := hub.Get(context.Background(), client.ObjectKey{Namespace: aliceNamespace, Name: "insecure"}, &fleetv1.NodeOperation{}); err == nil {
		t.Error("created in insecure mode")
	}
}
