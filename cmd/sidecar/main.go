// Command sidecar serves the hub's NodeSnapshots and ManagedClusters to many
// websocket and HTTP clients from one hub watch per kind, under the hub's
// own RBAC. It runs as a second container next to the operator.
package main

import (
	"flag"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/nodemirror/nodemirror/internal/sidecar"
)

func main() {
	var (
		addr, origins string
		opts          sidecar.Options
		hubQPS        float64
		hubBurst      int
	)
	flag.StringVar(&addr, "bind-address", ":8090", "Address to serve websocket, HTTP reads, UI, /metrics, /healthz and /readyz on.")
	flag.StringVar(&origins, "allowed-origins", "", "Comma-separated browser origin host patterns allowed besides the sidecar's own host, e.g. 'ui.example.com,*.corp.example'.")
	flag.BoolVar(&opts.InsecureNoAuth, "insecure-no-auth", false, "Serve everything to everyone without a token. For local demos only.")
	flag.IntVar(&opts.MaxSubscriptionsPerConn, "max-subscriptions-per-connection", 16, "Subscriptions one websocket connection may hold.")
	flag.IntVar(&opts.MaxConnsPerUser, "max-connections-per-user", 64, "Websocket connections one user may hold.")
	flag.IntVar(&opts.OutboxLimit, "client-queue-limit", 50000, "Messages that may wait for one client before it is closed and told to resume.")
	flag.IntVar(&opts.HistorySize, "history-size", 10000, "Events per kind kept for clients that resume with a resourceVersion.")
	flag.DurationVar(&opts.PingInterval, "ping-interval", 30*time.Second, "How often clients are pinged; one that does not answer within half of it is closed.")
	flag.DurationVar(&opts.WriteTimeout, "write-timeout", 10*time.Second, "How long one message may take to write before the client is closed.")
	flag.DurationVar(&opts.SyncWait, "sync-wait", 10*time.Second, "How long a websocket upgrade or list waits for the first hub list before it is answered 503.")
	flag.DurationVar(&opts.AuthCacheTTL, "auth-cache-ttl", 10*time.Second, "How long token and access reviews are reused.")
	flag.DurationVar(&opts.ReviewInterval, "review-interval", time.Minute, "How often open connections' tokens and subscriptions are checked again, so that revoked access ends the stream.")
	flag.Float64Var(&hubQPS, "hub-qps", 20, "Queries per second to the hub (token and access reviews).")
	flag.IntVar(&hubBurst, "hub-burst", 50, "Burst of queries to the hub.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)

	if origins != "" {
		for _, o := range strings.Split(origins, ",") {
			opts.OriginPatterns = append(opts.OriginPatterns, strings.TrimSpace(o))
		}
	}
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
	if err := s.Run(ctrl.SetupSignalHandler(), l); err != nil {
		log.Error(err, "Sidecar stopped with an error")
		os.Exit(1)
	}
}
