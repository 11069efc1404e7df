package sidecar_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// One hub for every test in this package; each test runs its own sidecar.
var (
	hubCfg *rest.Config
	hub    client.Client
	hubCS  kubernetes.Interface
	// Tokens: alice views team-a through the shipped viewer role; admin
	// may do anything anywhere.
	aliceToken, adminToken string
)

// aliceNamespace is where alice may look; tests keep apart by cluster names.
const aliceNamespace = "team-a"

func TestMain(m *testing.M) {
	os.Exit(framework.RunWithHub(m, func(cfg *rest.Config) error {
		hubCfg = cfg
		var err error
		if hub, err = client.New(cfg, client.Options{Scheme: framework.Scheme()}); err != nil {
			return err
		}
		hubCS = kubernetes.NewForConfigOrDie(cfg)
		return setupRBAC(context.Background())
	}))
}

// setupRBAC creates namespaces team-a and team-b, ServiceAccount alice who
// views team-a, and an admin.
func setupRBAC(ctx context.Context) error {
	for _, ns := range []string{"team-a", "team-b"} {
		if err := hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	objs := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "admin"}},
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
	if aliceToken, err = framework.ViewerToken(ctx, hubCS, aliceNamespace, "alice"); err != nil {
		return err
	}
	adminToken, err = framework.Token(ctx, hubCS, "team-a", "admin")
	return err
}

// testSidecar is a running sidecar with its own metrics and request counter.
type testSidecar = framework.Sidecar

func startSidecar(t *testing.T, opts sidecar.Options) *testSidecar {
	t.Helper()
	return framework.StartSidecar(t, hubCfg, opts, framework.SidecarOptions{})
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
	return websocket.Dial(ctx, strings.Replace(ts.URL, "http://", "ws://", 1)+"/api/v1/watch", opts)
}

// dialSilent connects a client that reads nothing (until the test itself
// does) and sends msgs, for tests of what the sidecar does to such a client.
func dialSilent(t *testing.T, ts *testSidecar, token string, msgs ...string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := dialRaw(ctx, ts, token, viaHeader, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	conn.SetReadLimit(-1)
	for _, m := range msgs {
		if err := conn.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	return conn
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
