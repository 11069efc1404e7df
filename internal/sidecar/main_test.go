package sidecar_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// One hub for every test in this package; each test runs its own sidecar.
var (
	hubCfg *rest.Config
	hub    client.Client
	hubCS  kubernetes.Interface
	// Tokens: alice may list in team-a only; admin may list everywhere.
	aliceToken, adminToken string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := framework.CheckAssets(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := framework.NewHub()
	cfgs, err := framework.StartAll(env)
	defer framework.StopAll(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hubCfg = cfgs[0]
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = fleetv1.AddToScheme(scheme)
	hub, _ = client.New(hubCfg, client.Options{Scheme: scheme})
	hubCS = kubernetes.NewForConfigOrDie(hubCfg)
	if err := setupRBAC(context.Background(), envOf(env)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func envOf(e *envtest.Environment) *envtest.Environment { return e }

// setupRBAC creates namespaces team-a and team-b, ServiceAccount alice who
// may list NodeSnapshots and ManagedClusters in team-a, and an admin.
func setupRBAC(ctx context.Context, _ *envtest.Environment) error {
	for _, ns := range []string{"team-a", "team-b"} {
		if err := hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "alice"}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "admin"}},
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "fleet-viewer"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{fleetv1.GroupVersion.Group}, Resources: []string{"nodesnapshots", "managedclusters"}, Verbs: []string{"get", "list", "watch"}}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "alice-views"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "fleet-viewer"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "team-a", Name: "alice"}},
		},
		&rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "sidecar-test-admin"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "team-a", Name: "admin"}},
		},
	}
	for _, o := range objs {
		if err := hub.Create(ctx, o); err != nil {
			return err
		}
	}
	var err error
	if aliceToken, err = token(ctx, "team-a", "alice"); err != nil {
		return err
	}
	adminToken, err = token(ctx, "team-a", "admin")
	return err
}

func token(ctx context.Context, ns, sa string) (string, error) {
	tr, err := hubCS.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", ns, sa, err)
	}
	return tr.Status.Token, nil
}

// testSidecar is a running sidecar with its own metrics and request counter.
type testSidecar struct {
	url      string // http://host:port
	requests *framework.RequestCounter
	registry *prometheus.Registry
}

func startSidecar(t *testing.T, opts sidecar.Options) *testSidecar {
	t.Helper()
	ts := startSidecarVia(t, opts, nil)
	waitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get(ts.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "sidecar ready")
	return ts
}

// startSidecarVia starts a sidecar whose hub requests pass through wrap
// (when not nil), and returns without waiting for it to be ready.
func startSidecarVia(t *testing.T, opts sidecar.Options, wrap func(http.RoundTripper) http.RoundTripper) *testSidecar {
	t.Helper()
	ts := &testSidecar{requests: &framework.RequestCounter{}, registry: prometheus.NewRegistry()}
	cfg := rest.CopyConfig(hubCfg)
	cfg.WrapTransport = ts.requests.Wrap
	if wrap != nil {
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return wrap(ts.requests.Wrap(rt)) }
	}
	opts.Registerer, opts.Gatherer = ts.registry, ts.registry
	opts.Log = testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	s, err := sidecar.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.url = "http://" + l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sidecar: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("sidecar did not stop within 10s")
		}
	})
	return ts
}

// metric reads a counter or gauge of the sidecar.
func (ts *testSidecar) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	fams, err := ts.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			ok := true
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
				}
				ok = ok && found
			}
			if !ok {
				continue
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wsClient is a real websocket client of the sidecar. A goroutine reads
// all the time (a timed-out Read would close the connection), so tests
// take events from a channel.
type wsClient struct {
	t      *testing.T
	conn   *websocket.Conn
	events chan []byte
	err    chan error
	// lastRV is the last envelope resourceVersion received.
	lastRV string
}

type authMode int

const (
	viaHeader authMode = iota
	viaSubprotocol
)

func dialRaw(ctx context.Context, ts *testSidecar, token string, mode authMode, origin string) (*websocket.Conn, *http.Response, error) {
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}, Subprotocols: []string{protocol.Subprotocol}}
	if token != "" {
		switch mode {
		case viaHeader:
			opts.HTTPHeader.Set("Authorization", "Bearer "+token)
		case viaSubprotocol:
			opts.Subprotocols = append([]string{protocol.BearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))}, opts.Subprotocols...)
		}
	}
	if origin != "" {
		opts.HTTPHeader.Set("Origin", origin)
	}
	return websocket.Dial(ctx, strings.Replace(ts.url, "http://", "ws://", 1)+"/api/v1/watch", opts)
}

func dial(t *testing.T, ts *testSidecar, token string, mode authMode) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := dialRaw(ctx, ts, token, mode, "")
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
		}
		t.Fatalf("dial: %v %s", err, body)
	}
	conn.SetReadLimit(-1)
	t.Cleanup(func() { _ = conn.CloseNow() })
	c := &wsClient{t: t, conn: conn, events: make(chan []byte, 1<<16), err: make(chan error, 1)}
	go c.readAll()
	return c
}

func (c *wsClient) readAll() {
	for {
		_, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.err <- err
			return
		}
		c.events <- data
	}
}

func (c *wsClient) send(msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// event is a received envelope with the parts tests look at.
type event struct {
	Sub, Type, Name, RV string
	Code                int32
	Reason              string
	InitialEnd          bool
	Labels              map[string]string
	Raw                 protocol.Envelope
}

func (e event) String() string {
	if e.Type == protocol.Error {
		return fmt.Sprintf("%s ERROR %d", e.Sub, e.Code)
	}
	return fmt.Sprintf("%s %s %s", e.Sub, e.Type, e.Name)
}

func (c *wsClient) next(timeout time.Duration) (event, error) {
	var data []byte
	select {
	case data = <-c.events:
	case err := <-c.err:
		c.err <- err
		return event{}, err
	case <-time.After(timeout):
		return event{}, context.DeadlineExceeded
	}
	return c.decode(data), nil
}

func (c *wsClient) decode(data []byte) event {
	var env protocol.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		c.t.Fatalf("bad envelope %s: %v", data, err)
	}
	var obj struct {
		Metadata struct {
			Name        string
			Labels      map[string]string
			Annotations map[string]string
		}
		Code   int32
		Reason string
	}
	if err := json.Unmarshal(env.Event.Object, &obj); err != nil {
		c.t.Fatalf("bad object %s: %v", env.Event.Object, err)
	}
	if env.ResourceVersion != "" {
		c.lastRV = env.ResourceVersion
	}
	return event{
		Sub: env.Subscription, Type: env.Event.Type, Name: obj.Metadata.Name, RV: env.ResourceVersion,
		Code: obj.Code, Reason: obj.Reason, Labels: obj.Metadata.Labels,
		InitialEnd: obj.Metadata.Annotations[protocol.InitialEventsEndAnnotation] == "true", Raw: env,
	}
}

func (c *wsClient) mustNext() event {
	c.t.Helper()
	e, err := c.next(10 * time.Second)
	if err != nil {
		c.t.Fatalf("reading: %v", err)
	}
	return e
}

// untilBookmark collects events until the initial-events-end BOOKMARK of sub.
func (c *wsClient) untilBookmark(sub string) []event {
	c.t.Helper()
	var got []event
	for {
		e := c.mustNext()
		if e.Sub == sub && e.Type == protocol.Bookmark && e.InitialEnd {
			return got
		}
		got = append(got, e)
	}
}

// quiet asserts that nothing arrives for d.
func (c *wsClient) quiet(d time.Duration) {
	c.t.Helper()
	if e, err := c.next(d); err == nil {
		c.t.Fatalf("unexpected event %v", e)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		c.t.Fatalf("connection failed: %v", err)
	}
}

func names(events []event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.String())
	}
	return out
}
