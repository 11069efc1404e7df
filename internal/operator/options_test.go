package operator

import (
	"context"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func parse(t *testing.T, args ...string) Options {
	t.Helper()
	var o Options
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	o.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestShardFlags(t *testing.T) {
	t.Setenv("POD_NAME", "nodemirror-operator-6d5f-abcde")
	t.Setenv("POD_NAMESPACE", "nodemirror-system")
	o := parse(t, "--shard-leases")
	want := ShardOptions{Enabled: true, Namespace: "nodemirror-system", Identity: "nodemirror-operator-6d5f-abcde",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	if o.Shard != want {
		t.Errorf("--shard-leases alone = %+v, want %+v", o.Shard, want)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("--shard-leases alone refused: %v", err)
	}
	if d := Defaults(); d.Shard.Enabled || !strings.Contains(d.Shard.Identity, "nodemirror-operator") {
		t.Errorf("defaults: sharding %v, identity %q from $POD_NAME", d.Shard.Enabled, d.Shard.Identity)
	}
}

func TestLeaderElectionAndShardingExcludeEachOther(t *testing.T) {
	o := parse(t, "--leader-elect", "--shard-leases")
	err := o.Validate()
	if err == nil || !strings.Contains(err.Error(), "--leader-elect and --shard-leases exclude each other") {
		t.Fatalf("Validate = %v", err)
	}
	// Run refuses before it touches any hub.
	if err := Run(context.Background(), &rest.Config{Host: "https://127.0.0.1:1"}, o, logr.Discard()); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Errorf("Run = %v", err)
	}
}

func TestBadShardSettingsSayWhat(t *testing.T) {
	o := parse(t, "--shard-leases", "--shard-namespace", "ns", "--shard-identity", "op-0", "--shard-renew-deadline", "20s",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0")
	err := Run(context.Background(), &rest.Config{Host: "https://127.0.0.1:1"}, o, logr.Discard())
	if err == nil || !strings.Contains(err.Error(), "--shard-leases: renew deadline 20s") {
		t.Errorf("Run with a renew deadline past the lease duration = %v", err)
	}
}

// TestHubQPSBoundsTheProcess: every hub client built from the operator's
// config shares the one bucket of --hub-qps; without the flag none has a
// limiter.
func TestHubQPSBoundsTheProcess(t *testing.T) {
	base := &rest.Config{Host: "https://hub.example:6443"}
	limiter := func(cfg *rest.Config) any {
		t.Helper()
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return cs.CoreV1().RESTClient().GetRateLimiter()
	}
	cfg := hubConfig(base, parse(t, "--hub-qps", "5", "--hub-burst", "10"))
	if a, b := limiter(rest.CopyConfig(cfg)), limiter(rest.CopyConfig(cfg)); a == nil || a != b {
		t.Errorf("--hub-qps: two clients have limiters %p and %p, want one shared", a, b)
	}
	if base.RateLimiter != nil || base.UserAgent != "" {
		t.Errorf("the caller's config changed: %+v", base)
	}
	if l := limiter(hubConfig(base, parse(t))); l != nil {
		t.Errorf("no --hub-qps: limiter %v, want none", l)
	}
}
