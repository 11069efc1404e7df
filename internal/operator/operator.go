package operator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/controllers/nodeoperation"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/session"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// hubConfig is a copy of cfg with the operator's user agent and the
// client-side limit of --hub-qps, if any: one bucket for every client made
// from it (the manager's and the sessions' metadata watches), so that the
// flag bounds the process, not each client.
func hubConfig(cfg *rest.Config, o Options) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(o.HubQPS), o.HubBurst
	if o.HubQPS <= 0 {
		cfg.QPS = -1 // client-go: no rate limiter
	} else {
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	cfg.UserAgent = "nodemirror-operator"
	return cfg
}

// Run runs the operator against the hub that cfg reaches until ctx ends.
// It sets cfg's rate limits and user agent from o.
func Run(ctx context.Context, cfg *rest.Config, o Options, log logr.Logger) error {
	if err := o.Validate(); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(fleetv1.AddToScheme(scheme))

	cfg = hubConfig(cfg, o)
	metricsOpts := metricsserver.Options{BindAddress: o.MetricsAddr, SecureServing: o.MetricsSecure}
	if o.MetricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
		metricsOpts.CertDir = o.MetricsCertPath
		if !o.EnableHTTP2 {
			metricsOpts.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
		}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.ProbeAddr,
		Cache:                         managedcluster.CacheOptions(),
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              "nodemirror-operator.fleet.nodemirror.io",
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Logger:                        log,
	})
	if err != nil {
		return fmt.Errorf("cannot create manager: %w", err)
	}
	var members *shard.Membership
	if o.Shard.Enabled {
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		sc := o.Shard.config()
		sc.Leases, sc.Log = cs.CoordinationV1(), log.WithName("shard")
		members, err = shard.New(sc)
		if err != nil {
			return fmt.Errorf("--shard-leases: %w", err)
		}
		if err := mgr.Add(members); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("shard", func(*http.Request) error { return members.Healthy() }); err != nil {
			return err
		}
	}
	r := &managedcluster.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodemirror-operator"),
		Policy: member.Policy{
			AllowExecAndFiles: o.AllowExecAndFiles, AllowProxy: o.AllowProxy, Limits: o.Limits,
			Network: member.Network{Allow: o.AllowCIDRs.Prefixes, Deny: o.DenyCIDRs.Prefixes},
		},
		MemberQPS:          float32(o.MemberQPS),
		MemberBurst:        o.MemberBurst,
		Probe:              session.ProbeOptions{Interval: o.ProbeInterval, Timeout: o.ProbeTimeout, FailureThreshold: o.ProbeFailures},
		Workers:            o.Workers,
		MaxConcurrent:      o.MaxConcurrentReconciles,
		MaxNodesPerCluster: o.MaxNodes,
		CredentialWarning:  o.CredentialWarning,
		WriteBudget:        session.NewWriteBudget(o.ClusterWriteQPS, o.ClusterWriteBurst),
		WriteGate:          session.NewWriteGate(o.WriteConcurrency),
		Shard:              members,
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("cannot set up the ManagedCluster controller: %w", err)
	}
	// NodeOperations act through the sessions' member access.
	ops := &nodeoperation.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodemirror-operator"),
		Members:   r,
		// Acting on nodes needs more than a watch and probes: its own budget.
		MemberQPS: float32(o.OperationQPS), MemberBurst: o.OperationBurst,
		Shard: members,
	}
	if err := ops.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("cannot set up the NodeOperation controller: %w", err)
	}
	if o.AllowExecAndFiles {
		log.Info("WARNING: kubeconfigs may run exec plugins and read local files (--allow-kubeconfig-exec-and-files)")
	}
	if len(o.AllowCIDRs.Prefixes) > 0 {
		log.Info("WARNING: members may be reached at addresses that are denied by default (--member-allow-cidrs)", "cidrs", o.AllowCIDRs.String())
	}
	if o.AllowProxy {
		log.Info("WARNING: kubeconfigs may send member traffic through a proxy of their choice (--allow-kubeconfig-proxy)")
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("Starting operator")
	return mgr.Start(ctx)
}
