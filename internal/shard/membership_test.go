package shard_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodemirror/nodemirror/internal/shard"
	"github.com/nodemirror/nodemirror/test/framework"
)

const (
	leaseDuration = 2 * time.Second
	renewDeadline = 1500 * time.Millisecond
	retryPeriod   = 200 * time.Millisecond
	namespace     = "default"
)

// ledger is what the members run, shared: it fails the test the moment a
// key would start on one member while another still runs it.
type ledger struct {
	t        *testing.T
	mu       sync.Mutex
	keys     []string
	running  map[string]string
	starts   map[string]int
	overlaps int
}

func (l *ledger) list(context.Context) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.keys), nil
}

func (l *ledger) start(member, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if other, ok := l.running[key]; ok && other != member {
		l.overlaps++
		l.t.Errorf("%s starts %s while %s still runs it", member, key, other)
	}
	l.running[key] = member
	l.starts[key]++
}

func (l *ledger) stop(member, key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running[key] == member {
		delete(l.running, key)
	}
}

func (l *ledger) snapshot() (map[string]string, map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps(l.running), maps(l.starts)
}

func maps[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// member is one running Membership whose hub connection can be cut.
type member struct {
	m      *shard.Membership
	cut    atomic.Bool
	cancel context.CancelFunc
	done   chan struct{}
}

func startMember(t *testing.T, hub *rest.Config, l *ledger, id string) *member {
	t.Helper()
	mb := &member{done: make(chan struct{})}
	cfg := rest.CopyConfig(hub)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if mb.cut.Load() {
				return nil, errors.New("partitioned from the hub")
			}
			return rt.RoundTrip(r)
		})
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	m, err := shard.New(shard.Config{
		Leases: cs.CoordinationV1(), Namespace: namespace, Identity: id,
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
		Log: testr.NewWithOptions(t, testr.Options{Verbosity: 0}),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.AddKeyspace(shard.Keyspace{
		Kind:     "Thing",
		List:     l.list,
		Release:  func(k string) { l.stop(id, k) },
		Acquired: func(k string) { l.start(id, k) },
	})
	mb.m = m
	ctx, cancel := context.WithCancel(context.Background())
	mb.cancel = cancel
	go func() {
		defer close(mb.done)
		_ = m.Start(ctx)
	}()
	t.Cleanup(mb.stop)
	return mb
}

func (mb *member) stop() {
	mb.cancel()
	<-mb.done
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// placedAs waits until every key runs exactly on its rendezvous owner
// among members, and returns how long that took.
func placedAs(t *testing.T, l *ledger, members []string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	framework.WaitFor(t, within, fmt.Sprintf("every key running on its owner among %v", members), func() bool {
		running, _ := l.snapshot()
		keys, _ := l.list(context.Background())
		if len(running) != len(keys) {
			return false
		}
		for _, k := range keys {
			if running[k] != shard.Owner("Thing/"+k, members) {
				return false
			}
		}
		return true
	})
	return time.Since(start)
}

// TestMembersShareKeysBehindTheFence runs three members against a real
// hub: a join moves only the joiner's share, a member cut off from the hub
// stops its keys by its renew deadline and the others take them within two
// lease durations, a member that leaves cleanly hands over at once, and
// at no moment does a key run on two members.
func TestMembersShareKeysBehindTheFence(t *testing.T) {
	cp := framework.StartControlPlanes(t, 0)
	l := &ledger{t: t, running: map[string]string{}, starts: map[string]int{}}
	for i := range 40 {
		l.keys = append(l.keys, fmt.Sprintf("team-%d/cluster-%d", i%3, i))
	}
	a := startMember(t, cp.HubConfig, l, "replica-a")
	b := startMember(t, cp.HubConfig, l, "replica-b")
	placedAs(t, l, []string{"replica-a", "replica-b"}, 10*time.Second)

	// A third joins: only the keys it wins move, and only once.
	_, before := l.snapshot()
	c := startMember(t, cp.HubConfig, l, "replica-c")
	all := []string{"replica-a", "replica-b", "replica-c"}
	took := placedAs(t, l, all, 10*time.Second)
	_, after := l.snapshot()
	moved := 0
	for _, k := range l.keys {
		stays := shard.Owner("Thing/"+k, all) == shard.Owner("Thing/"+k, all[:2])
		if stays && after[k] != before[k] {
			t.Errorf("%s stays on %s but was started again on the join", k, shard.Owner("Thing/"+k, all))
		}
		if !stays {
			moved++
			if after[k] != before[k]+1 {
				t.Errorf("%s moved to replica-c with %d starts, want 1", k, after[k]-before[k])
			}
		}
	}
	t.Logf("the join moved %d of %d keys in %v", moved, len(l.keys), took)
	if moved == 0 || moved == len(l.keys) {
		t.Errorf("the join moved %d of %d keys", moved, len(l.keys))
	}

	// A new key goes to its owner.
	l.mu.Lock()
	l.keys = append(l.keys, "team-9/late")
	l.mu.Unlock()
	placedAs(t, l, all, 5*time.Second)

	// b is cut off from the hub, its Lease left behind as a killed
	// replica leaves it: it stops its keys itself by its renew deadline...
	b.cut.Store(true)
	cutAt := time.Now()
	framework.WaitFor(t, renewDeadline+time.Second, "replica-b stopped all of its keys", func() bool { return b.m.Owned("Thing") == 0 })
	t.Logf("replica-b fenced itself %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	// ...and the others run them within two lease durations.
	placedAs(t, l, []string{"replica-a", "replica-c"}, 2*leaseDuration+time.Second)
	if took := time.Since(cutAt); took > 2*leaseDuration {
		t.Errorf("the keys of the cut member resumed %v after the cut, want within 2 lease durations (%v)", took, 2*leaseDuration)
	} else {
		t.Logf("the keys of the cut member resumed on the others %v after the cut", took.Round(time.Millisecond))
	}
	b.stop()

	// c leaves cleanly: it deletes its Lease, a takes over without
	// waiting for it to expire.
	c.stop()
	left := time.Now()
	placedAs(t, l, []string{"replica-a"}, leaseDuration)
	t.Logf("replica-c's keys resumed on replica-a %v after it left", time.Since(left).Round(time.Millisecond))
	if _, err := kubernetes.NewForConfigOrDie(cp.HubConfig).CoordinationV1().Leases(namespace).Get(context.Background(), shard.LeasePrefix+"replica-c", metav1.GetOptions{}); err == nil {
		t.Errorf("replica-c's Lease is still there after it left")
	}
	a.stop()
	if l.overlaps > 0 {
		t.Errorf("%d starts overlapped a run elsewhere", l.overlaps)
	}
}

func TestConfigRefusesBadSettings(t *testing.T) {
	cs := kubernetes.NewForConfigOrDie(&rest.Config{Host: "https://127.0.0.1:1"})
	good := shard.Config{Leases: cs.CoordinationV1(), Namespace: "ns", Identity: "op-0", LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	for name, c := range map[string]struct {
		change func(*shard.Config)
		want   string
	}{
		"no namespace":            {func(c *shard.Config) { c.Namespace = "" }, "namespace"},
		"no identity":             {func(c *shard.Config) { c.Identity = "" }, "identity is empty"},
		"identity not a name":     {func(c *shard.Config) { c.Identity = "Op_0" }, "does not make a Lease name"},
		"fractional lease":        {func(c *shard.Config) { c.LeaseDuration = 1500 * time.Millisecond }, "whole seconds"},
		"deadline past the lease": {func(c *shard.Config) { c.RenewDeadline = 15 * time.Second }, "less than the lease duration"},
		"retry past the deadline": {func(c *shard.Config) { c.RetryPeriod = 10 * time.Second }, "less than the renew deadline"},
	} {
		cfg := good
		c.change(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one saying %q", name, err, c.want)
		}
	}
}
