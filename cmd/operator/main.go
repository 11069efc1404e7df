// Command operator runs the nodemirror operator on the hub cluster: it
// reconciles ManagedClusters into per-cluster node informers and mirrors
// their nodes into NodeSnapshots, and runs NodeOperations on member nodes.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/controllers/nodeoperation"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/session"
	"github.com/nodemirror/nodemirror/internal/version"
)

func main() {
	var (
		metricsAddr, probeAddr      string
		metricsSecure, enableHTTP2  bool
		metricsCertPath             string
		leaderElect                 bool
		leaderElectionNamespace     string
		hubQPS, memberQPS           float64
		hubBurst, memberBurst       int
		allowExecAndFiles           bool
		probeInterval, probeTimeout time.Duration
		probeFailures, workers      int
		maxConcurrentReconciles     int
		allowProxy                  bool
		allowCIDRs, denyCIDRs       cidrList
		limits                      member.Limits
		maxNodes                    int
		clusterWriteQPS             float64
		clusterWriteBurst           int
		credentialWarning           time.Duration
		operationQPS                float64
		operationBurst              int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS, to callers whose token the hub authenticates and whose identity may get /metrics "+
		"(TokenReview, then SubjectAccessReview). false: plain HTTP to anyone who can reach the port.")
	flag.StringVar(&metricsCertPath, "metrics-cert-path", "", "Directory with tls.crt and tls.key for the metrics endpoint (e.g. from cert-manager), reloaded when they change; empty: a self-signed certificate.")
	flag.BoolVar(&enableHTTP2, "enable-http2", false, "Serve metrics over HTTP/2 too. Off by default: HTTP/2 Rapid Reset and Stream Cancellation (CVE-2023-44487, CVE-2023-39325).")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica mirrors at a time.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the leader election Lease (default: $POD_NAMESPACE, else the pod's namespace).")
	flag.Float64Var(&hubQPS, "hub-qps", 50, "Queries per second to the hub API server.")
	flag.IntVar(&hubBurst, "hub-burst", 100, "Burst of queries to the hub API server.")
	flag.Float64Var(&clusterWriteQPS, "hub-write-qps-per-cluster", 25, "NodeSnapshot writes per second one ManagedCluster may make, so that one cluster's churn leaves the rest of --hub-qps to the others. 0: no per-cluster limit.")
	flag.IntVar(&clusterWriteBurst, "hub-write-burst-per-cluster", 50, "Burst of NodeSnapshot writes one ManagedCluster may make.")
	flag.Float64Var(&memberQPS, "member-qps", 5, "Queries per second to each member API server (list, watch, probes).")
	flag.IntVar(&memberBurst, "member-burst", 10, "Burst of queries to each member API server.")
	flag.BoolVar(&allowExecAndFiles, "allow-kubeconfig-exec-and-files", false,
		"Accept kubeconfigs whose user runs an exec or auth-provider plugin or that read local files. "+
			"Off by default: anyone who can write a Secret could make the operator run programs or read its own files.")
	flag.IntVar(&maxNodes, "max-nodes-per-cluster", 5000, "Most NodeSnapshots one ManagedCluster may have; nodes past it are not mirrored and the cluster says so (reason TooManyNodes). 0: no limit.")
	flag.BoolVar(&allowProxy, "allow-kubeconfig-proxy", false, "Accept kubeconfigs whose cluster sets proxy-url (the proxy, not the member, is then dialed and checked).")
	flag.Var(&denyCIDRs, "member-deny-cidrs", "Comma-separated CIDRs members may never be reached at, besides loopback, link-local, unspecified and multicast: "+
		"give the hub's pod and service CIDRs and its API server's address.")
	flag.Var(&allowCIDRs, "member-allow-cidrs", "Comma-separated CIDRs opened even if denied (e.g. 127.0.0.1/32 for members on the same host in a demo). Logged loudly.")
	flag.Int64Var(&limits.ProbeBytes, "member-max-probe-bytes", 1<<20, "Largest /readyz, /healthz or /version answer read from a member.")
	flag.Int64Var(&limits.ResponseBytes, "member-max-response-bytes", 128<<20, "Largest other member response read, e.g. a page of a node list.")
	flag.Int64Var(&limits.WatchEventBytes, "member-max-watch-event-bytes", 8<<20, "Largest single member watch event read.")
	flag.DurationVar(&limits.RequestTimeout, "member-request-timeout", time.Minute, "Longest a member request other than a watch may take, body included.")
	flag.DurationVar(&probeInterval, "member-probe-interval", 10*time.Second, "How often each member's /readyz is probed.")
	flag.DurationVar(&probeTimeout, "member-probe-timeout", 5*time.Second, "Timeout of one member health probe.")
	flag.IntVar(&probeFailures, "member-probe-failure-threshold", 3, "Failed probes in a row before a connected member is reported lost.")
	flag.IntVar(&workers, "snapshot-workers", 2, "Concurrent NodeSnapshot writers per member cluster.")
	flag.IntVar(&maxConcurrentReconciles, "max-concurrent-reconciles", 4, "ManagedClusters reconciled at once.")
	flag.Float64Var(&operationQPS, "member-operation-qps", 20, "Queries per second one NodeOperation may make to one member (node patches, pod lists, evictions).")
	flag.IntVar(&operationBurst, "member-operation-burst", 40, "Burst of --member-operation-qps.")
	flag.DurationVar(&credentialWarning, "credential-expiry-warning", 14*24*time.Hour, "How long ahead of a member credential's expiry (a token's exp, a client certificate's notAfter) a ManagedCluster says so: condition CredentialExpiring and a Warning Event.")
	printVersion := flag.Bool("version", false, "Print the version and exit.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *printVersion {
		fmt.Println(version.String("nodemirror-operator"))
		os.Exit(0)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	log.Info("Build", "version", version.String("nodemirror-operator"))

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(fleetv1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(hubQPS), hubBurst
	cfg.UserAgent = "nodemirror-operator"
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: metricsSecure}
	if metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
		metricsOpts.CertDir = metricsCertPath
		if !enableHTTP2 {
			metricsOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        probeAddr,
		Cache:                         managedcluster.CacheOptions(),
		LeaderElection:                leaderElect,
		LeaderElectionID:              "nodemirror-operator.fleet.nodemirror.io",
		LeaderElectionNamespace:       leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		log.Error(err, "Cannot create manager")
		os.Exit(1)
	}
	ctx := ctrl.SetupSignalHandler()
	r := &managedcluster.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodemirror-operator"),
		Policy: member.Policy{
			AllowExecAndFiles: allowExecAndFiles, AllowProxy: allowProxy, Limits: limits,
			Network: member.Network{Allow: allowCIDRs.prefixes, Deny: denyCIDRs.prefixes},
		},
		MemberQPS:          float32(memberQPS),
		MemberBurst:        memberBurst,
		Probe:              session.ProbeOptions{Interval: probeInterval, Timeout: probeTimeout, FailureThreshold: probeFailures},
		Workers:            workers,
		MaxConcurrent:      maxConcurrentReconciles,
		MaxNodesPerCluster: maxNodes,
		CredentialWarning:  credentialWarning,
		WriteBudget:        session.NewWriteBudget(clusterWriteQPS, clusterWriteBurst),
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		log.Error(err, "Cannot set up controller")
		os.Exit(1)
	}
	// NodeOperations act through the sessions' member access.
	ops := &nodeoperation.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodemirror-operator"),
		Members:   r,
		// Acting on nodes needs more than a watch and probes: its own budget.
		MemberQPS: float32(operationQPS), MemberBurst: operationBurst,
	}
	if err := ops.SetupWithManager(ctx, mgr); err != nil {
		log.Error(err, "Cannot set up NodeOperation controller")
		os.Exit(1)
	}
	if allowExecAndFiles {
		log.Info("WARNING: kubeconfigs may run exec plugins and read local files (--allow-kubeconfig-exec-and-files)")
	}
	if len(allowCIDRs.prefixes) > 0 {
		log.Info("WARNING: members may be reached at addresses that are denied by default (--member-allow-cidrs)", "cidrs", allowCIDRs.String())
	}
	if allowProxy {
		log.Info("WARNING: kubeconfigs may send member traffic through a proxy of their choice (--allow-kubeconfig-proxy)")
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))
	log.Info("Starting operator")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}

// cidrList is a comma-separated list of CIDRs, as a flag.
type cidrList struct {
	raw      []string
	prefixes []netip.Prefix
}

func (l *cidrList) String() string { return strings.Join(l.raw, ",") }

func (l *cidrList) Set(v string) error {
	parts := strings.Split(v, ",")
	p, err := member.ParsePrefixes(parts)
	if err != nil {
		return err
	}
	l.raw, l.prefixes = append(l.raw, parts...), append(l.prefixes, p...)
	return nil
}
