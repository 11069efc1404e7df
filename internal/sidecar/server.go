package sidecar

import (
	"bufio"
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
	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
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
	// InsecureNoAuth skips authentication and authorization: local demos
	// only. Requests must then name the bound address (or localhost) in
	// their Host header, so that a web page cannot reach the sidecar
	// through a DNS name it rebinds to a local address.
	InsecureNoAuth bool
	// MaxSubscriptionsPerConn (16) and MaxConnsPerUser (64) bound one user.
	MaxSubscriptionsPerConn int
	MaxConnsPerUser         int
	// MaxListsPerUser is how many HTTP lists one user may have in progress
	// at once (4); more are answered 429.
	MaxListsPerUser int
	// MaxConnections bounds the TCP connections served at once, websockets
	// included (10,000); past it new connections wait to be accepted.
	MaxConnections int
	// IdleTimeout closes keep-alive HTTP connections idle that long (2m).
	IdleTimeout time.Duration
	// OutboxLimit is how many messages may wait for one client before it
	// is closed with protocol.CloseResume (default 50,000).
	OutboxLimit int
	// OutboxBytes bounds what one client's queue holds of its own,
	// catch-up included (objects are shared by all clients and not
	// counted): past it the client is closed with protocol.CloseResume
	// (default 16 MiB, some 100,000 pending events).
	OutboxBytes int
	// HistorySize is how many events per kind are kept for resuming
	// clients (default 10,000).
	HistorySize int
	// PingInterval (30s) and WriteTimeout (10s) find dead and stuck peers.
	PingInterval time.Duration
	WriteTimeout time.Duration
	// InvalidMessageLimit (20) refused messages within
	// InvalidMessageWindow (1m) are tolerated; one more closes the
	// connection with protocol.CloseInvalidMessages.
	InvalidMessageLimit  int
	InvalidMessageWindow time.Duration
	// SyncWait is how long a websocket or list request waits for the hub
	// caches' first list before it is answered 503 (default 10s): no
	// request is ever answered from a cache that has not been filled.
	SyncWait time.Duration
	// AuthCacheTTL is how long token and access reviews are reused (10s).
	AuthCacheTTL time.Duration
	// ReviewInterval is how often an open connection's token and
	// subscriptions are checked again (1m).
	ReviewInterval time.Duration
	// TokenAudiences, when set, are the audiences a token must be meant
	// for (TokenReview spec.audiences), so that users can hand the sidecar
	// tokens good for nothing else.
	TokenAudiences []string
	// PerIPAuthQPS (5) and PerIPAuthBurst (50) bound, per client IP, the
	// requests whose token is not in the cache: those that would cost the
	// hub a TokenReview. Past them the answer is 429.
	PerIPAuthQPS   float64
	PerIPAuthBurst int
	// TokenReviewQPS and TokenReviewBurst (10, 20) and AccessReviewQPS and
	// AccessReviewBurst (20, 50) are the hub clients' budgets for
	// TokenReviews and SubjectAccessReviews, kept apart so that neither
	// starves the other, nor the watches.
	TokenReviewQPS    float32
	TokenReviewBurst  int
	AccessReviewQPS   float32
	AccessReviewBurst int
	// MaxCreateBytes bounds the body of a NodeOperation create (256 KiB);
	// larger ones are answered 413.
	MaxCreateBytes int
	// CreateQPS (1) and CreateBurst (10) bound the NodeOperations one user
	// may create through the sidecar; past them the answer is 429.
	CreateQPS   float64
	CreateBurst int
	// CreateTimeout bounds one create at the hub (10s).
	CreateTimeout time.Duration
	// Registerer receives the sidecar's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Gatherer is what ServeMetrics serves; the API port never serves it.
	Gatherer prometheus.Gatherer
	Clock    clock.WithTicker
	Log      logr.Logger
}

func (o *Options) defaults() {
	setDefault(&o.MaxSubscriptionsPerConn, 16)
	setDefault(&o.MaxConnsPerUser, 64)
	setDefault(&o.MaxListsPerUser, 4)
	setDefault(&o.MaxConnections, 10000)
	setDefault(&o.IdleTimeout, 2*time.Minute)
	setDefault(&o.OutboxLimit, 50000)
	setDefault(&o.OutboxBytes, 16<<20)
	setDefault(&o.HistorySize, 10000)
	setDefault(&o.PingInterval, 30*time.Second)
	setDefault(&o.WriteTimeout, 10*time.Second)
	setDefault(&o.InvalidMessageLimit, 20)
	setDefault(&o.InvalidMessageWindow, time.Minute)
	setDefault(&o.SyncWait, 10*time.Second)
	setDefault(&o.AuthCacheTTL, 10*time.Second)
	setDefault(&o.ReviewInterval, time.Minute)
	setDefault(&o.PerIPAuthQPS, 5)
	setDefault(&o.PerIPAuthBurst, 50)
	setDefault(&o.TokenReviewQPS, 10)
	setDefault(&o.TokenReviewBurst, 20)
	setDefault(&o.AccessReviewQPS, 20)
	setDefault(&o.AccessReviewBurst, 50)
	setDefault(&o.MaxCreateBytes, 256<<10)
	setDefault(&o.CreateQPS, 1)
	setDefault(&o.CreateBurst, 10)
	setDefault(&o.CreateTimeout, 10*time.Second)
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
}

func setDefault[T int | float32 | float64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
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
	// perIP holds a token bucket per client IP (*rate.Limiter), for the
	// requests that would cost a TokenReview.
	perIP *cache.LRUExpireCache
	// perUserCreate holds a token bucket per user name, for creates.
	perUserCreate *cache.LRUExpireCache

	mu    sync.Mutex
	conns map[string]int // user name → open connections
	lists map[string]int // user name → lists in progress
}

// Verbs asked of the hub: a subscription is a watch, an HTTP read a list.
const (
	verbList  = "list"
	verbWatch = "watch"
)

// New builds a sidecar that reads the hub through cfg.
func New(cfg *rest.Config, opts Options) (*Server, error) {
	opts.defaults()
	s := &Server{
		opts: opts, hub: cfg, kinds: newKinds(opts.HistorySize),
		metrics: newMetrics(opts.Registerer), clock: opts.Clock, log: opts.Log,
		perIP: cache.NewLRUExpireCache(16384), perUserCreate: cache.NewLRUExpireCache(16384),
		conns: map[string]int{}, lists: map[string]int{},
	}
	if opts.InsecureNoAuth {
		s.auth = allowAll{}
	} else {
		tokenReviews, err := reviewClient(cfg, opts.TokenReviewQPS, opts.TokenReviewBurst)
		if err != nil {
			return nil, err
		}
		accessReviews, err := reviewClient(cfg, opts.AccessReviewQPS, opts.AccessReviewBurst)
		if err != nil {
			return nil, err
		}
		s.auth = newHubAuth(tokenReviews, accessReviews, opts.TokenAudiences, opts.AuthCacheTTL)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /api/v1/watch", s.serveWatch)
	s.mux.HandleFunc("GET /api/v1/whoami", s.serveWhoami)
	s.mux.HandleFunc("GET /api/v1/{resource}", s.serveList)
	s.mux.HandleFunc("GET /api/v1/namespaces/{namespace}/{resource}", s.serveList)
	s.mux.HandleFunc("GET /api/v1/namespaces/{namespace}/access", s.serveAccess)
	s.mux.HandleFunc("POST /api/v1/namespaces/{namespace}/nodeoperations", s.serveCreateOperation)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	s.mux.Handle("GET /", ui.Handler())
	return s, nil
}

// reviewClient is a hub client of its own, with its own rate limiter:
// rest.CopyConfig would share cfg's limiter if it had one.
func reviewClient(cfg *rest.Config, qps float32, burst int) (kubernetes.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.RateLimiter = nil
	c.QPS, c.Burst = qps, burst
	return kubernetes.NewForConfig(c)
}

// Handler serves the API, health and UI routes (without the checks Run
// adds for its listener: the Host check of InsecureNoAuth).
func (s *Server) Handler() http.Handler { return s.mux }

// Ready reports whether every kind has been listed from the hub.
func (s *Server) Ready() bool {
	for _, k := range s.kinds {
		if !k.broker.HasSynced() {
			return false
		}
	}
	return true
}

// Run watches the hub and serves the API, health and UI on l until ctx
// ends. Metrics are not served here: see ServeMetrics.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	dyn, err := dynamic.NewForConfig(s.hub)
	if err != nil {
		return err
	}
	h := http.Handler(s.mux)
	if s.opts.InsecureNoAuth {
		s.log.Info("WARNING: --insecure-no-auth: every client may read every namespace without a token. Use this for local demos only, never on a shared network.")
		h = s.checkHost(l.Addr(), h)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, k := range s.kinds {
		wg.Go(func() { runReflector(ctx, dyn, k) })
	}
	srv := &http.Server{
		Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: s.opts.IdleTimeout,
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("Serving", "address", l.Addr().String(), "maxConnections", s.opts.MaxConnections)
	return serve(ctx, &wg, srv, newLimitListener(l, s.opts.MaxConnections))
}

// ServeMetrics serves the Gatherer's metrics on l, at /metrics, until ctx
// ends. It is a listener of its own so that the public port never shows
// them.
func (s *Server) ServeMetrics(ctx context.Context, l net.Listener) error {
	if s.opts.Gatherer == nil {
		return errors.New("no Gatherer to serve")
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: s.opts.IdleTimeout}
	s.log.Info("Serving metrics", "address", l.Addr().String())
	var wg sync.WaitGroup
	defer wg.Wait()
	return serve(ctx, &wg, srv, l)
}

func serve(ctx context.Context, wg *sync.WaitGroup, srv *http.Server, l net.Listener) error {
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// checkHost answers 403 to requests whose Host is not the bound address:
// without authentication, the sidecar must not answer a page whose own
// DNS name was rebound to this address. IP literals (of the bound address,
// or any when bound to all addresses) and localhost names pass: a
// rebinding attack needs a name of the attacker's.
func (s *Server) checkHost(bound net.Addr, next http.Handler) http.Handler {
	addr, _ := bound.(*net.TCPAddr)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if addr != nil && !hostAllowed(addr, r.Host) {
			s.metrics.authDenials.WithLabelValues("host").Inc()
			writeStatus(w, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden,
				"with --insecure-no-auth the Host must be the sidecar's own address "+bound.String()+" or localhost, not "+protocol.Quote(r.Host)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func hostAllowed(bound *net.TCPAddr, hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = hostport, "80"
	}
	if port != strconv.Itoa(bound.Port) {
		return false
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if ip := net.ParseIP(host); ip != nil {
		return bound.IP.IsUnspecified() || ip.Equal(bound.IP)
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return bound.IP.IsUnspecified() || bound.IP.IsLoopback()
	}
	return false
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

// allowReview spends one of the client IP's TokenReviews.
func (s *Server) allowReview(r *http.Request) bool {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	return s.spend(s.perIP, ip, s.opts.PerIPAuthQPS, s.opts.PerIPAuthBurst)
}

// spend takes one token from key's bucket in buckets, a bucket of qps and
// burst made on first use.
func (s *Server) spend(buckets *cache.LRUExpireCache, key string, qps float64, burst int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l *rate.Limiter
	if v, ok := buckets.Get(key); ok {
		l = v.(*rate.Limiter)
	} else {
		l = rate.NewLimiter(rate.Limit(qps), burst)
	}
	// A bucket left alone this long is full again: forgetting it then
	// changes nothing.
	refill := time.Duration(float64(burst)/qps*float64(time.Second)) + time.Minute
	buckets.Add(key, l, refill)
	return l.Allow()
}

// authenticate answers 401, 429 or 503 itself and returns nil when the
// request has no valid token.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) *User {
	token := bearerToken(r)
	if token == "" && !s.opts.InsecureNoAuth {
		s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusUnauthorized, metav1.StatusReasonUnauthorized,
			"a hub bearer token is required: send it as 'Authorization: Bearer <token>' or in the '"+protocol.BearerProtocolPrefix+"<base64url token>' websocket subprotocol"))
		return nil
	}
	if !s.auth.Cached(token) && !s.allowReview(r) {
		s.metrics.authDenials.WithLabelValues("rate_limited").Inc()
		w.Header().Set("Retry-After", "1")
		writeStatus(w, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			"too many new tokens from this address: retry later"))
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
	if !s.acquire(s.conns, u.Name, s.opts.MaxConnsPerUser) {
		s.metrics.authDenials.WithLabelValues("too_many_connections").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, fmt.Sprintf("at most %d connections per user", s.opts.MaxConnsPerUser)))
		return
	}
	defer s.release(s.conns, u.Name)
	if !s.waitSynced(w, r, slices.Collect(maps.Values(s.kinds))...) {
		return
	}
	uw := &upgradeWriter{ResponseWriter: w}
	ws, err := websocket.Accept(uw, r, &websocket.AcceptOptions{
		Subprotocols:   []string{protocol.Subprotocol},
		OriginPatterns: s.opts.OriginPatterns,
	})
	if err != nil {
		// Accept has answered already (403 for a foreign Origin).
		s.metrics.authDenials.WithLabelValues("origin").Inc()
		s.log.V(1).Info("Refused websocket", "err", err, "origin", protocol.Clip(r.Header.Get("Origin"), protocol.MaxEchoBytes))
		return
	}
	ws.SetReadLimit(protocol.HardMessageBytes)
	s.metrics.clients.Inc()
	defer s.metrics.clients.Dec()
	newConnection(s, ws, uw.conn, u, bearerToken(r), s.log.WithValues("user", u.Name, "remote", r.RemoteAddr)).run(r.Context())
}

// maxRefusalBytes bounds the body of a refused upgrade.
const maxRefusalBytes = 512

// upgradeWriter is the ResponseWriter websocket.Accept gets. It bounds
// what Accept writes when it refuses an upgrade (its messages quote request
// headers, Origin, Host, Upgrade, Sec-WebSocket-Key, whole), and hands
// Accept the connection as a frameConn, through which the sidecar writes
// its data frames itself.
type upgradeWriter struct {
	http.ResponseWriter
	written int
	conn    *frameConn // set by Hijack
}

func (w *upgradeWriter) Write(p []byte) (int, error) {
	if room := maxRefusalBytes - w.written; room > 0 {
		if _, err := w.ResponseWriter.Write(p[:min(len(p), room)]); err != nil {
			return 0, err
		}
	}
	w.written += len(p)
	return len(p), nil
}

// Hijack takes the connection over for the websocket, wrapped: the
// library's buffered writer then writes through the frameConn too.
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = newFrameConn(c)
	brw.Writer.Reset(w.conn)
	return w.conn, brw, nil
}

// Unwrap is how http.ResponseController finds the connection underneath.
func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// acquire counts one more of user's connections or lists in counts, unless
// they hold limit already.
func (s *Server) acquire(counts map[string]int, user string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if counts[user] >= limit {
		return false
	}
	counts[user]++
	return true
}

func (s *Server) release(counts map[string]int, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if counts[user]--; counts[user] <= 0 {
		delete(counts, user)
	}
}

func (s *Server) serveWhoami(w http.ResponseWriter, r *http.Request) {
	if u := s.authenticate(w, r); u != nil {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(u)
	}
}

// listWriters are the buffers lists are written through.
var listWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// serveList answers GET /api/v1[/namespaces/{namespace}]/{resource}
// [?cluster=a,b] from the broker, in the shape of a Kubernetes list. The
// items are the objects' stored JSON, streamed as they are: the body is
// never assembled, and its length is known beforehand from the objects'.
func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	var k *kindInfo
	for _, ki := range s.kinds {
		if ki.resource == r.PathValue("resource") {
			k = ki
		}
	}
	if k == nil {
		writeStatus(w, protocol.NewStatus(http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("no resource %s: try nodesnapshots, managedclusters or nodeoperations", protocol.Quote(r.PathValue("resource")))))
		return
	}
	ns := r.PathValue("namespace")
	if ns != "" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			writeStatus(w, protocol.BadRequest("invalid namespace "+protocol.Quote(ns)))
			return
		}
	}
	u := s.authenticate(w, r)
	if u == nil {
		return
	}
	if !s.acquire(s.lists, u.Name, s.opts.MaxListsPerUser) {
		s.metrics.authDenials.WithLabelValues("too_many_lists").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, fmt.Sprintf("at most %d lists in progress per user", s.opts.MaxListsPerUser)))
		return
	}
	defer s.release(s.lists, u.Name)
	allowed, reason, err := s.auth.Allowed(r.Context(), u, verbList, k.resource, ns)
	if err != nil {
		s.log.Error(err, "Cannot authorize list")
		writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot check authorization with the hub; retry later"))
		return
	}
	if !allowed {
		s.metrics.authDenials.WithLabelValues("forbidden").Inc()
		writeStatus(w, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden, forbiddenMessage(u, verbList, k.resource, ns, reason)))
		return
	}
	if !s.waitSynced(w, r, k) {
		return
	}
	var clusters []string
	if c := r.URL.Query().Get("cluster"); c != "" {
		if k.kind == protocol.KindNodeOperation {
			writeStatus(w, protocol.BadRequest("?cluster cannot filter nodeoperations, which may act on many clusters"))
			return
		}
		clusters = strings.Split(c, ",")
	}
	objs, rv, err := k.broker.List(fanout.NewFilter(ns, clusters))
	if err != nil { // synced brokers stay synced; kept for safety
		writeStatus(w, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error()))
		return
	}
	head := fmt.Appendf(nil, `{"apiVersion":%q,"kind":"%sList","metadata":{"resourceVersion":%q},"items":[`, fleetv1.GroupVersion.String(), k.kind, rv)
	const tail = "]}"
	size := len(head) + len(tail) + max(len(objs)-1, 0) // the commas
	for _, o := range objs {
		size += len(o.Raw)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(size))
	bw := listWriters.Get().(*bufio.Writer)
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		listWriters.Put(bw)
	}()
	_, _ = bw.Write(head)
	for i, o := range objs {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		if _, err := bw.Write(o.Raw); err != nil {
			return // the client went away
		}
	}
	_, _ = bw.WriteString(tail)
	_ = bw.Flush()
}

func writeStatus(w http.ResponseWriter, st *metav1.Status) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(st)
}
