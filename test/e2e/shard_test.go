package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/internal/shard"
	"github.com/nodemirror/nodemirror/test/framework"
)

const (
	shardLease    = 2 * time.Second
	shardDeadline = 1500 * time.Millisecond
	shardRetry    = 250 * time.Millisecond
	shardClusters = 8
)

// replica is one in-process operator replica with its own hub link.
type replica struct {
	name string
	link *framework.HubLink
	m    *shard.Membership
	stop func() error
}

func startReplica(t *testing.T, ctx context.Context, hub *rest.Config, name string) *replica {
	t.Helper()
	rp := &replica{name: name, link: &framework.HubLink{}}
	cfg := rest.CopyConfig(hub)
	cfg.WrapTransport = rp.link.Wrap
	stop, m, err := framework.StartShardedOperator(ctx, cfg, shard.Config{
		Namespace: "default", Identity: name,
		LeaseDuration: shardLease, RenewDeadline: shardDeadline, RetryPeriod: shardRetry,
	})
	if err != nil {
		t.Fatal(err)
	}
	rp.m, rp.stop = m, stop
	stopped := false
	rp.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		return stop()
	}
	t.Cleanup(func() { _ = rp.stop() })
	return rp
}

func shardNamespace(i int) string { return fmt.Sprintf("shard-%d", i) }

// ownerOf is the replica rendezvous hashing gives cluster i among replicas.
func ownerOf(i int, replicas []*replica) string {
	var names []string
	for _, r := range replicas {
		names = append(names, r.name)
	}
	return shard.Owner(managedcluster.ShardKind+"/"+shardNamespace(i)+"/cluster", names)
}

// placed waits until every cluster is owned by its rendezvous owner among
// replicas, and by no other replica of all.
func placed(t *testing.T, within time.Duration, replicas, all []*replica) {
	t.Helper()
	framework.WaitFor(t, within, "every cluster owned by its rendezvous owner alone", func() bool {
		for i := range shardClusters {
			want := ownerOf(i, replicas)
			for _, r := range all {
				if r.m.Owns(managedcluster.ShardKind, shardNamespace(i)+"/cluster") != (r.name == want) {
					return false
				}
			}
		}
		return true
	})
}

// sessionsStarted waits until every cluster's owner among replicas has
// started its session: ownership comes first, the session with the
// reconcile that follows.
func sessionsStarted(t *testing.T, replicas []*replica) {
	t.Helper()
	framework.WaitFor(t, 10*time.Second, "every owner's session started", func() bool {
		for i := range shardClusters {
			for _, r := range replicas {
				if r.name == ownerOf(i, replicas) && seeds(r)[shardNamespace(i)] == 0 {
					return false
				}
			}
		}
		return true
	})
}

// seeds counts, per namespace, the session starts of a replica: a session
// starts with one list of its cluster's snapshots, in their namespace.
func seeds(r *replica) map[string]int {
	out := map[string]int{}
	for _, q := range r.link.Requests() {
		if q.Method == "LIST" && q.Resource == "nodesnapshots" && q.Namespace != "" {
			out[q.Namespace]++
		}
	}
	return out
}

// TestShardedReplicasOneWriterPerCluster runs operator replicas sharing
// eight ManagedClusters through Leases against a real hub and member:
// replicas joining move only their share (clusters that stay keep their
// session); a replica cut off from the hub, its Lease left as a killed
// process leaves it, fences itself, and its clusters resume on the others
// within two lease durations with nothing lost; and the hub's requests,
// recorded per replica, show no two replicas writing one cluster's
// objects (snapshots, status, Events) in overlapping windows.
func TestShardedReplicasOneWriterPerCluster(t *testing.T) {
	cp := framework.StartControlPlanes(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hub, err := client.New(cp.HubConfig, client.Options{Scheme: framework.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	member := kubernetes.NewForConfigOrDie(cp.MemberConfigs[0])
	kubeconfig, err := framework.Kubeconfig(cp.Members[0], "member-admin", []string{"system:masters"}, "")
	if err != nil {
		t.Fatal(err)
	}
	// Cluster i mirrors the member's nodes of pool i, in namespace shard-i,
	// so that a request's namespace says whose it is.
	for i := range shardClusters {
		ns := shardNamespace(i)
		for j := range 2 {
			if _, err := framework.CreateNode(ctx, member, framework.NewNode(fmt.Sprintf("p%d-n%d", i, j), map[string]string{"pool": fmt.Sprint(i)})); err != nil {
				t.Fatal(err)
			}
		}
		mc := framework.NewManagedCluster(ns, "cluster")
		mc.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"pool": fmt.Sprint(i)}}
		for _, o := range []client.Object{
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cluster-kubeconfig", Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}}, Data: map[string][]byte{"kubeconfig": kubeconfig}},
			mc,
		} {
			if err := hub.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	// current: every pool's snapshots are there and carry label gen=want.
	current := func(want string, nodes int) bool {
		for i := range shardClusters {
			var list fleetv1.NodeSnapshotList
			if hub.List(ctx, &list, client.InNamespace(shardNamespace(i))) != nil || len(list.Items) != nodes {
				return false
			}
			for _, s := range list.Items {
				if want != "" && s.Status.Labels["gen"] != want {
					return false
				}
			}
		}
		return true
	}
	relabel := func(gen string) {
		t.Helper()
		nodes, err := member.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			if err := framework.PatchLabel(ctx, member, n.Name, "gen", &gen); err != nil {
				t.Fatal(err)
			}
		}
	}

	r0 := startReplica(t, ctx, cp.HubConfig, "replica-0")
	framework.WaitFor(t, 30*time.Second, "every cluster mirrored by the first replica", func() bool { return current("", 2) })
	// Changes flow all along, through every handover: two writers for one
	// cluster would both have something to write.
	churn, stopChurn := context.WithCancel(ctx)
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		for v := 0; churn.Err() == nil; v++ {
			for i := range shardClusters {
				_ = framework.PatchLabel(churn, member, fmt.Sprintf("p%d-n0", i), "churn", new(fmt.Sprint(v)))
			}
			select {
			case <-churn.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	var all []*replica
	live := []*replica{r0}
	for _, name := range []string{"replica-1", "replica-2"} {
		all = append(all, live...)
		before := map[string]map[string]int{}
		for _, r := range live {
			before[r.name] = seeds(r)
		}
		prev := slices.Clone(live)
		joined := startReplica(t, ctx, cp.HubConfig, name)
		live = append(live, joined)
		all = append(all[:0], live...)
		placed(t, 10*time.Second, live, all)
		sessionsStarted(t, live)
		moved := 0
		for i := range shardClusters {
			was, is := ownerOf(i, prev), ownerOf(i, live)
			if was != is {
				moved++
				if is != name {
					t.Errorf("cluster %d moved from %s to %s when %s joined", i, was, is, name)
				}
				continue
			}
			for _, r := range prev {
				if r.name == was && seeds(r)[shardNamespace(i)] != before[r.name][shardNamespace(i)] {
					t.Errorf("cluster %d stays on %s, but its session was restarted when %s joined", i, was, name)
				}
			}
		}
		t.Logf("%s joined: %d of %d clusters moved to it", name, moved, shardClusters)
	}
	relabel("1")
	framework.WaitFor(t, 20*time.Second, "every change mirrored by three replicas", func() bool { return current("1", 2) })
	for i := range shardClusters {
		t.Logf("cluster %d: owned by %s", i, ownerOf(i, live))
	}

	// replica-0 is cut off from the hub: its Lease stays as it was, as a
	// SIGKILLed replica's does. The member changes meanwhile: a label on
	// every node and a new node in every pool.
	victim := r0
	victim.link.Cut()
	cutAt := time.Now()
	relabel("2")
	for i := range shardClusters {
		if _, err := framework.CreateNode(ctx, member, framework.NewNode(fmt.Sprintf("p%d-n2", i), map[string]string{"pool": fmt.Sprint(i), "gen": "2"})); err != nil {
			t.Fatal(err)
		}
	}
	framework.WaitFor(t, shardDeadline+time.Second, "the cut replica stopped all of its clusters", func() bool {
		return victim.m.Owned(managedcluster.ShardKind) == 0
	})
	t.Logf("the cut replica fenced itself %v after the cut", time.Since(cutAt).Round(time.Millisecond))
	rest := live[1:]
	placed(t, 2*shardLease+time.Second, rest, rest)
	took := time.Since(cutAt)
	framework.WaitFor(t, 20*time.Second, "every change made while replica-0 was gone mirrored", func() bool { return current("2", 3) })
	t.Logf("the cut replica's clusters resumed elsewhere %v after the cut; all snapshots current %v after it", took.Round(time.Millisecond), time.Since(cutAt).Round(time.Millisecond))
	if took > 2*shardLease {
		t.Errorf("the clusters resumed %v after the cut, want within 2 lease durations (%v)", took, 2*shardLease)
	}
	stopChurn()
	<-churned
	for _, r := range live {
		if err := r.stop(); err != nil {
			t.Errorf("%s: %v", r.name, err)
		}
	}

	// No two writers for one cluster: per namespace, the writes sorted by
	// when they were sent form runs of one replica each; each run ends
	// (its last answer in) before the next one starts, and no replica
	// comes back to a cluster it left.
	type write struct {
		replica        string
		sent, answered time.Time
		what           string
	}
	byNS := map[string][]write{}
	for _, r := range live {
		for _, q := range r.link.Requests() {
			if q.IsWrite() && strings.HasPrefix(q.Namespace, "shard-") {
				byNS[q.Namespace] = append(byNS[q.Namespace], write{r.name, q.Sent, q.Answered, q.Method + " " + q.Resource})
			}
		}
	}
	for i := range shardClusters {
		ns := shardNamespace(i)
		ws := byNS[ns]
		sort.Slice(ws, func(a, b int) bool { return ws[a].sent.Before(ws[b].sent) })
		var runs []string
		var lastAnswer time.Time
		counts := map[string]int{}
		for k, w := range ws {
			counts[w.replica]++
			if k > 0 && w.replica == ws[k-1].replica {
				lastAnswer = later(lastAnswer, w.answered)
				continue
			}
			if slices.Contains(runs, w.replica) {
				t.Errorf("%s: %s writes again (%s at %s) after another replica wrote; writers %v", ns, w.replica, w.what, w.sent.Format("15:04:05.000"), runs)
			}
			if k > 0 && !lastAnswer.Before(w.sent) {
				t.Errorf("%s: %s wrote (%s) at %s before %s's last write was answered at %s", ns, w.replica, w.what,
					w.sent.Format("15:04:05.000"), ws[k-1].replica, lastAnswer.Format("15:04:05.000"))
			}
			runs = append(runs, w.replica)
			lastAnswer = w.answered
		}
		t.Logf("%s: writers in turn %v, writes %v", ns, runs, counts)
		if len(runs) == 0 {
			t.Errorf("%s: no replica wrote", ns)
		} else if got, want := runs[len(runs)-1], ownerOf(i, rest); got != want {
			t.Errorf("%s: last writer %s, want its owner %s", ns, got, want)
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
