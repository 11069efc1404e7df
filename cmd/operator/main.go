// Command operator runs the nodemirror operator on the hub cluster: it
// reconciles ManagedClusters into per-cluster node informers and mirrors
// their nodes into NodeSnapshots.
package main

import (
	"flag"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/session"
)

func main() {
	var (
		metricsAddr, probeAddr      string
		leaderElect                 bool
		leaderElectionNamespace     string
		hubQPS, memberQPS           float64
		hubBurst, memberBurst       int
		allowExecAndFiles           bool
		probeInterval, probeTimeout time.Duration
		probeFailures, workers      int
		maxConcurrentReconciles     int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the /healthz and /readyz endpoints bind to.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica mirrors at a time.")
	flag.StringVar(&leaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's namespace).")
	flag.Float64Var(&hubQPS, "hub-qps", 50, "Queries per second to the hub API server.")
	flag.IntVar(&hubBurst, "hub-burst", 100, "Burst of queries to the hub API server.")
	flag.Float64Var(&memberQPS, "member-qps", 5, "Queries per second to each member API server (list, watch, probes).")
	flag.IntVar(&memberBurst, "member-burst", 10, "Burst of queries to each member API server.")
	flag.BoolVar(&allowExecAndFiles, "allow-kubeconfig-exec-and-files", false,
		"Accept kubeconfigs whose user runs an exec or auth-provider plugin or that read local files. "+
			"Off by default: anyone who can write a Secret could make the operator run programs or read its own files.")
	flag.DurationVar(&probeInterval, "member-probe-interval", 10*time.Second, "How often each member's /readyz is probed.")
	flag.DurationVar(&probeTimeout, "member-probe-timeout", 5*time.Second, "Timeout of one member health probe.")
	flag.IntVar(&probeFailures, "member-probe-failure-threshold", 3, "Failed probes in a row before a connected member is reported lost.")
	flag.IntVar(&workers, "snapshot-workers", 2, "Concurrent NodeSnapshot writers per member cluster.")
	flag.IntVar(&maxConcurrentReconciles, "max-concurrent-reconciles", 4, "ManagedClusters reconciled at once.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(fleetv1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(hubQPS), hubBurst
	cfg.UserAgent = "nodemirror-operator"
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
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
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Recorder:      mgr.GetEventRecorder("nodemirror-operator"),
		Policy:        member.Policy{AllowExecAndFiles: allowExecAndFiles},
		MemberQPS:     float32(memberQPS),
		MemberBurst:   memberBurst,
		Probe:         session.ProbeOptions{Interval: probeInterval, Timeout: probeTimeout, FailureThreshold: probeFailures},
		Workers:       workers,
		MaxConcurrent: maxConcurrentReconciles,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		log.Error(err, "Cannot set up controller")
		os.Exit(1)
	}
	if allowExecAndFiles {
		log.Info("WARNING: kubeconfigs may run exec plugins and read local files (--allow-kubeconfig-exec-and-files)")
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))
	log.Info("Starting operator")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}
