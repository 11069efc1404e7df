package framework

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"runtime/pprof"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/controllers/nodeoperation"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/session"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// Scheme knows the built-in kinds and nodemirror's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := fleetv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// StartOperator runs the operator in-process against the hub, tuned for
// tests (fast probes and status updates). It returns a function that stops
// it and waits until it has stopped. tune changes the reconciler's settings.
func StartOperator(ctx context.Context, hub *rest.Config, tune ...func(*managedcluster.Reconciler)) (stop func() error, err error) {
	stop, _, err = startOperator(ctx, hub, nil, tune...)
	return stop, err
}

// StartShardedOperator runs one replica of a sharded operator in-process,
// as StartOperator does, a shard member as sc says (its Lease client is
// made from hub). It returns the replica's membership too.
func StartShardedOperator(ctx context.Context, hub *rest.Config, sc shard.Config, tune ...func(*managedcluster.Reconciler)) (stop func() error, m *shard.Membership, err error) {
	return startOperator(ctx, hub, &sc, tune...)
}

func startOperator(ctx context.Context, hub *rest.Config, sc *shard.Config, tune ...func(*managedcluster.Reconciler)) (stop func() error, members *shard.Membership, err error) {
	mgr, err := ctrl.NewManager(hub, ctrl.Options{
		Scheme:                 Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  managedcluster.CacheOptions(),
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, nil, err
	}
	if sc != nil {
		cs, err := kubernetes.NewForConfig(hub)
		if err != nil {
			return nil, nil, err
		}
		sc.Leases = cs.CoordinationV1()
		if members, err = shard.New(*sc); err != nil {
			return nil, nil, err
		}
		if err := mgr.Add(members); err != nil {
			return nil, nil, err
		}
	}
	r := &managedcluster.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodemirror-operator"),
		// Members of the suites listen on 127.0.0.1; the rest of
		// loopback stays denied, for the tests of the guard.
		Policy:         member.Policy{Network: member.Network{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}},
		MemberQPS:      100,
		MemberBurst:    200,
		Probe:          session.ProbeOptions{Interval: 200 * time.Millisecond, Timeout: time.Second, FailureThreshold: 3},
		Workers:        2,
		NotifyInterval: 50 * time.Millisecond,
		MaxConcurrent:  4,
		// As the operator binary's defaults.
		MaxNodesPerCluster: 5000,
		CredentialWarning:  14 * 24 * time.Hour,
		Shard:              members,
	}
	for _, t := range tune {
		t(r)
	}
	ctx, cancel := context.WithCancel(ctx)
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		cancel()
		return nil, nil, err
	}
	ops := &nodeoperation.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodemirror-operator"),
		Members:   r,
		// Retry refused evictions often: tests lift budgets and wait.
		EvictionBackoff: 500 * time.Millisecond,
		ClusterWait:     20 * time.Second,
		Shard:           members,
	}
	if err := ops.SetupWithManager(ctx, mgr); err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			// What it is stuck on is the one thing worth knowing.
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			return errors.New("operator did not stop within 30s")
		}
	}, members, nil
}
