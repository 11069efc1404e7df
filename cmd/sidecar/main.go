// Command sidecar serves the hub's NodeSnapshots and ManagedClusters to many
// websocket and HTTP clients from one hub watch per kind, under the hub's
// own RBAC. It runs as a Deployment of its own, apart from the operator,
// under a ServiceAccount that can read the three kinds and nothing else.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/internal/version"
)

func main() {
	var (
		addr, metricsAddr, origins, audiences string
		opts                                  sidecar.Options
		hubQPS                                float64
		hubBurst                              int
		tokenReviewQPS, accessReviewQPS       float64
	)
	flag.StringVar(&addr, "bind-address", ":8090", "Address to serve websocket, HTTP reads, UI, /healthz and /readyz on.")
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8091", "Address to serve Prometheus /metrics on, apart from the public port; 0 disables it.")
	flag.StringVar(&origins, "allowed-origins", "", "Comma-separated browser origin host patterns allowed besides the sidecar's own host, e.g. 'ui.example.com,*.corp.example'.")
	flag.BoolVar(&opts.InsecureNoAuth, "insecure-no-auth", false, "Serve everything to everyone without a token. For local demos only.")
	flag.IntVar(&opts.MaxSubscriptionsPerConn, "max-subscriptions-per-connection", 16, "Subscriptions one websocket connection may hold.")
	flag.IntVar(&opts.MaxConnsPerUser, "max-connections-per-user", 64, "Websocket connections one user may hold.")
	flag.IntVar(&opts.MaxListsPerUser, "max-concurrent-lists-per-user", 4, "HTTP lists one user may have in progress at once; more are answered 429.")
	flag.IntVar(&opts.MaxConnections, "max-connections", 10000, "TCP connections served at once on the public port, websockets included; past it new connections wait to be accepted.")
	flag.DurationVar(&opts.IdleTimeout, "idle-timeout", 2*time.Minute, "How long an idle keep-alive HTTP connection stays open.")
	flag.IntVar(&opts.OutboxLimit, "client-queue-limit", 50000, "Messages that may wait for one client before it is closed and told to resume.")
	flag.IntVar(&opts.OutboxBytes, "client-queue-bytes", 16<<20, "Bytes one client's queue may hold of its own (catch-up included; objects are shared and not counted) before it is closed and told to resume.")
	flag.IntVar(&opts.HistorySize, "history-size", 10000, "Events per kind kept for clients that resume with a resourceVersion.")
	flag.DurationVar(&opts.PingInterval, "ping-interval", 30*time.Second, "How often clients are pinged; one that does not answer within half of it is closed.")
	flag.DurationVar(&opts.WriteTimeout, "write-timeout", 10*time.Second, "How long one message may take to write before the client is closed with 4000; it then has as long again to read up to the close frame.")
	flag.IntVar(&opts.InvalidMessageLimit, "max-invalid-messages", 20, "Refused websocket messages tolerated within --invalid-message-window; one more closes the connection with 4002.")
	flag.DurationVar(&opts.InvalidMessageWindow, "invalid-message-window", time.Minute, "The window --max-invalid-messages counts in.")
	flag.DurationVar(&opts.SyncWait, "sync-wait", 10*time.Second, "How long a websocket upgrade or list waits for the first hub list before it is answered 503.")
	flag.DurationVar(&opts.AuthCacheTTL, "auth-cache-ttl", 10*time.Second, "How long token and access reviews are reused.")
	flag.DurationVar(&opts.ReviewInterval, "review-interval", time.Minute, "How often open connections' tokens and subscriptions are checked again, so that revoked access ends the stream.")
	flag.StringVar(&audiences, "token-audiences", "", "Comma-separated audiences a client's token must be meant for (TokenReview spec.audiences), e.g. 'nodemirror-sidecar'; empty takes the hub API server's own.")
	flag.Float64Var(&opts.PerIPAuthQPS, "per-ip-auth-qps", 5, "Requests per second one client IP may make with tokens not in the review cache (each costs a TokenReview); past it, 429.")
	flag.IntVar(&opts.PerIPAuthBurst, "per-ip-auth-burst", 50, "Burst of --per-ip-auth-qps.")
	flag.Float64Var(&tokenReviewQPS, "token-review-qps", 10, "TokenReviews per second the sidecar may ask of the hub.")
	flag.IntVar(&opts.TokenReviewBurst, "token-review-burst", 20, "Burst of --token-review-qps.")
	flag.Float64Var(&accessReviewQPS, "access-review-qps", 20, "SubjectAccessReviews per second the sidecar may ask of the hub.")
	flag.IntVar(&opts.AccessReviewBurst, "access-review-burst", 50, "Burst of --access-review-qps.")
	flag.IntVar(&opts.MaxCreateBytes, "max-create-bytes", 256<<10, "Largest body of a NodeOperation create; larger ones are answered 413.")
	flag.Float64Var(&opts.CreateQPS, "create-qps", 1, "NodeOperations per second one user may create through the sidecar (with their own token); past it, 429.")
	flag.IntVar(&opts.CreateBurst, "create-burst", 10, "Burst of --create-qps.")
	flag.DurationVar(&opts.CreateTimeout, "create-timeout", 10*time.Second, "How long one NodeOperation create may take at the hub.")
	flag.Float64Var(&hubQPS, "hub-qps", 20, "Queries per second to the hub for the watches (reviews have their own budgets).")
	flag.IntVar(&hubBurst, "hub-burst", 50, "Burst of --hub-qps.")
	printVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("nodemirror-sidecar"))
		os.Exit(0)
	}
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)
	log.Info("Build", "version", version.String("nodemirror-sidecar"))

	if origins != "" {
		for _, o := range strings.Split(origins, ",") {
			opts.OriginPatterns = append(opts.OriginPatterns, strings.TrimSpace(o))
		}
	}
	for _, a := range strings.Split(audiences, ",") {
		if a = strings.TrimSpace(a); a != "" {
			opts.TokenAudiences = append(opts.TokenAudiences, a)
		}
	}
	opts.TokenReviewQPS, opts.AccessReviewQPS = float32(tokenReviewQPS), float32(accessReviewQPS)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts.Registerer, opts.Gatherer = reg, reg
	opts.Log = log.WithName("sidecar")

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(hubQPS), hubBurst
	cfg.UserAgent = "nodemirror-sidecar"
	s, err := sidecar.New(cfg, opts)
	if err != nil {
		log.Error(err, "Cannot create sidecar")
		os.Exit(1)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error(err, "Cannot listen", "address", addr)
		os.Exit(1)
	}
	var ml net.Listener
	if metricsAddr != "0" {
		if ml, err = net.Listen("tcp", metricsAddr); err != nil {
			log.Error(err, "Cannot listen for metrics", "address", metricsAddr)
			os.Exit(1)
		}
	}
	g, ctx := errgroup.WithContext(ctrl.SetupSignalHandler())
	g.Go(func() error { return s.Run(ctx, l) })
	if ml != nil {
		g.Go(func() error { return s.ServeMetrics(ctx, ml) })
	}
	if err := g.Wait(); err != nil {
		log.Error(err, "Sidecar stopped with an error")
		os.Exit(1)
	}
}
