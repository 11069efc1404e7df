package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/fanout"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/ui"
)

// Options tune the sidecar. Zero values take the defaults.
type Options struct {
	// OriginPatterns are the browser origins (host patterns, see
	// websocket.AcceptOptions) allowed besides the sidecar's own host.
	OriginPatterns []string
	// InsecureNoAuth skips authentication and authorization: local demos only.
	InsecureNoAuth bool
	// MaxSubscriptionsPerConn (16) and MaxConnsPerUser (64) bound one user.
	MaxSubscriptionsPerConn int
	MaxConnsPerUser         int
	// OutboxLimit is how many messages may wait for one client before it
	// is closed with protocol.CloseResume (default 50,000).
	OutboxLimit int
	// HistorySize is how many events per kind are kept for resuming
	// clients (default 10,000).
	HistorySize int
	// PingInterval (30s) and WriteTimeout (10s) find dead and stuck peers.
	PingInterval time.Duration
	WriteTimeout time.Duration
	// SyncWait is how long a websocket or list request waits for the hub
	// caches' first list before it is answered 503 (default 10s): no
	// request is ever answered from a cache that has not been filled.
	SyncWait time.Duration
	// AuthCacheTTL is how long token and access reviews are reused (10s).
	AuthCacheTTL time.Duration
	// ReviewInterval is how often an open connection's token and
	// subscriptions are checked again (1m).
	ReviewInterval time.Duration
	// Registerer receives the sidecar's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Gatherer is served on /metrics; nil serves nothing there.
	Gatherer prometheus.Gatherer
	Clock    clock.WithTicker
	Log      logr.Logger
}

func (o *Options) defaults() {
	if o.MaxSubscriptionsPerConn <= 0 {
		o.MaxSubscriptionsPerConn = 16
	}
	if o.MaxConnsPerUser <= 0 {
		o.MaxConnsPerUser = 64
	}
	if o.OutboxLimit <= 0 {
		o.OutboxLimit = 50000
	}
	if o.HistorySize <= 0 {
		o.HistorySize = 10000
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.SyncWait <= 0 {
		o.SyncWait = 10 * time.Second
	}
	if o.AuthCacheTTL <= 0 {
		o.AuthCacheTTL = 10 * time.Second
	}
	if o.ReviewInterval <= 0 {
		o.ReviewInterval = time.Minute
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

// Server is the sidecar.
type Server struct {
	opts    Options
	hub     *rest.Config
	kinds   map[string]*kindInfo
	auth    Auth
	metrics *metrics
	clock   clock.WithTicker
	log     logr.Logger
	mux     *http.ServeMux

	mu    sync.Mutex
	conns map[string]int // user name → open connections
}

// New builds a sidecar that reads the hub through cfg.
func New(cfg *rest.Config, opts Options) (*Server, error) {
	opts.defaults()
	s := &Server{
		opts: opts, hub: cfg, kinds: newKinds(opts.HistorySize),
		metrics: newMetrics(opts.Registerer), clock: opts.Clock, log: opts.Log,
		conns: map[string]int{},
	}
	if opts.InsecureNoAuth {
		s.auth = allowAll{}
	} else {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		s.auth = newHubAuth(cs, opts.AuthCacheTTL)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /api/v1/watch", s.serveWatch)
	s.mux.HandleFunc("GET /api/v1/whoami", s.serveWhoami)
	s.mux.HandleFunc("GET /api/v1/{resource}", s.serveList)
	s.mux.HandleFunc("GET /api/v1/namespaces/{namespace}/{resource}", s.serveList)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /", ui.Handler())
	if opts.Gatherer != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	return s, nil
}

// Handler serves every route.
func (s *Server) Handler() http.Handler { return s.mux }

// Ready reports whether both kinds have been listed from the hub.
func (s *Server) Ready() bool {
	for _, k := range s.kinds {
		if !k.broker.HasSynced() {
			return false
		}
	}
	return true
}

// Run watches the hub and serves on l until ctx ends.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	dyn, err := dynamic.NewForConfig(s.hub)
	if err != nil {
		return err
	}
	if s.opts.InsecureNoAuth {
		s.log.Info("WARNING: --insecure-no-auth: every client may read every namespace without a token. Use this for local demos only, never on a shared network.")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, k := range s.kinds {
		wg.Go(func() { runReflector(ctx, dyn, k) })
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	s.log.Info("Serving", "address", l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// waitSynced waits, at most SyncWait, until every broker has stored its
// first list. When it returns false it has answered 503 itself.
func (s *Server) waitSynced(w http.ResponseWriter, r *http.Request, kinds ...*kindInfo) bool {
	var timeout <-chan time.Time
	for _, k := range kinds {
		if k.broker.HasSynced() {
			continue
		}
		if timeout == nil {
			t := s.clock.NewTimer(s.opts.SyncWait)
			defer t.Stop()
			timeout = t.C()
		}
		select {
		case <-k.broker.Synced():
		case <-timeout:
			w.Header().Set("Retry-After", "1")
			writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
				"the sidecar has not listed "+k.resource+" from the hub yet; retry shortly"))
			return false
		case <-r.Context().Done():
			return false
		}
	}
	return true
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	if !s.Ready() {
		http.Error(w, "hub caches not synced yet", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok"))
}

// authenticate answers 401 (or 503) itself and returns nil when the request
// has no valid token.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) *User {
	token := bearerToken(r)
	if token == "" && !s.opts.InsecureNoAuth {
		s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusUnauthorized, metav1.StatusReasonUnauthorized,
			"a hub bearer token is required: send it as 'Authorization: Bearer <token>' or in the '"+protocol.BearerProtocolPrefix+"<base64url token>' websocket subprotocol"))
		return nil
	}
	u, err := s.auth.Authenticate(r.Context(), token)
	if err != nil {
		s.log.Error(err, "Cannot review token")
		writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot check the token with the hub; retry later"))
		return nil
	}
	if u == nil {
		s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "the hub does not accept this token"))
		return nil
	}
	return u
}

func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request) {
	u := s.authenticate(w, r)
	if u == nil {
		return
	}
	if !s.acquire(u.Name) {
		s.metrics.authDenials.WithLabelValues("too_many_connections").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, fmt.Sprintf("at most %d connections per user", s.opts.MaxConnsPerUser)))
		return
	}
	defer s.release(u.Name)
	if !s.waitSynced(w, r, slices.Collect(maps.Values(s.kinds))...) {
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:   []string{protocol.Subprotocol},
		OriginPatterns: s.opts.OriginPatterns,
	})
	if err != nil {
		// Accept has answered already (403 for a foreign Origin).
		s.metrics.authDenials.WithLabelValues("origin").Inc()
		s.log.V(1).Info("Refused websocket", "err", err, "origin", r.Header.Get("Origin"))
		return
	}
	ws.SetReadLimit(protocol.HardMessageBytes)
	s.metrics.clients.Inc()
	defer s.metrics.clients.Dec()
	c := &connection{
		s: s, ws: ws, user: u, token: bearerToken(r), log: s.log.WithValues("user", u.Name, "remote", r.RemoteAddr),
		out:  fanout.NewOutbox(s.opts.OutboxLimit, s.metrics.conflated.Inc),
		subs: map[string]*subscription{},
	}
	c.run(r.Context())
}

func (s *Server) acquire(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[user] >= s.opts.MaxConnsPerUser {
		return false
	}
	s.conns[user]++
	return true
}

func (s *Server) release(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns[user]--; s.conns[user] <= 0 {
		delete(s.conns, user)
	}
}

func (s *Server) serveWhoami(w http.ResponseWriter, r *http.Request) {
	if u := s.authenticate(w, r); u != nil {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(u)
	}
}

// serveList answers GET /api/v1[/namespaces/{namespace}]/{resource}
// [?cluster=a,b] from the broker, in the shape of a Kubernetes list. The
// items are the objects' stored JSON, written as they are.
func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	var k *kindInfo
	for _, ki := range s.kinds {
		if ki.resource == r.PathValue("resource") {
			k = ki
		}
	}
	if k == nil {
		writeStatus(w, protocol.NewStatus(http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("no resource %q: try nodesnapshots or managedclusters", r.PathValue("resource"))))
		return
	}
	ns := r.PathValue("namespace")
	if ns != "" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			writeStatus(w, protocol.BadRequest(fmt.Sprintf("invalid namespace %q", ns)))
			return
		}
	}
	u := s.authenticate(w, r)
	if u == nil {
		return
	}
	allowed, reason, err := s.auth.Allowed(r.Context(), u, k.resource, ns)
	if err != nil {
		s.log.Error(err, "Cannot authorize list")
		writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot check authorization with the hub; retry later"))
		return
	}
	if !allowed {
		s.metrics.authDenials.WithLabelValues("forbidden").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden, forbiddenMessage(u, k.resource, ns, reason)))
		return
	}
	if !s.waitSynced(w, r, k) {
		return
	}
	f := fanout.Filter{Namespace: ns}
	if c := r.URL.Query().Get("cluster"); c != "" {
		f.Clusters = map[string]bool{}
		for _, name := range strings.Split(c, ",") {
			f.Clusters[name] = true
		}
	}
	objs, rv, err := k.broker.List(f)
	if err != nil { // synced brokers stay synced; kept for safety
		writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error()))
		return
	}
	size := 128
	for _, o := range objs {
		size += len(o.Raw) + 1
	}
	body := make([]byte, 0, size)
	body = fmt.Appendf(body, `{"apiVersion":%q,"kind":"%sList","metadata":{"resourceVersion":%q},"items":[`, fleetv1.GroupVersion.String(), k.kind, rv)
	for i, o := range objs {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, o.Raw...)
	}
	body = append(body, "]}"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func writeStatus(w http.ResponseWriter, st *metav1.Status) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(st)
}
