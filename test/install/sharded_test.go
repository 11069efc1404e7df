package install

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/internal/dev/simulator"
	"github.com/nodemirror/nodemirror/internal/shard"
	"github.com/nodemirror/nodemirror/test/framework"
)

const (
	shardedClusters = 6
	shardedNodes    = 3 // per cluster
	shardLabel      = "install.nodemirror.io/shard"
)

// TestShardedInstallSurvivesAKill installs config/sharded on an empty hub
// and runs its operator Deployment as three real processes, each with the
// Deployment's args and env (only the ports, the pod name and a member
// allow-list for loopback differ, as three pods on one machine need), in
// front of six ManagedClusters of one member. It then SIGKILLs the replica
// holding the most clusters: nothing releases its Lease, so its clusters
// must wait for that Lease to expire and then resume on the others, within
// two lease durations, with a change made meanwhile mirrored. Sampled
// every 100 ms throughout, no cluster is held by two live Leases.
func TestShardedInstallSurvivesAKill(t *testing.T) {
	manifest := kustomize(t, filepath.Join(framework.RepoRoot(), "config", "sharded"))
	hubEnv, memberEnv := framework.NewMember(), framework.NewMember() // bare API servers: the manifest brings the CRDs
	cfgs, err := framework.StartAll(hubEnv, memberEnv)
	t.Cleanup(func() { framework.StopAll(hubEnv, memberEnv) })
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k := kubectl{t: t, kubeconfig: writeAdminKubeconfig(t, hubEnv, dir)}
	path := filepath.Join(dir, "sharded.yaml")
	if err := os.WriteFile(path, manifest, 0o600); err != nil {
		t.Fatal(err)
	}
	k.must(nil, "apply", "--server-side", "--field-manager=install-test", "-f", path)
	k.must(nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/managedclusters.fleet.nodemirror.io", "crd/nodesnapshots.fleet.nodemirror.io")

	var operator *appsv1.Deployment
	for _, obj := range decodeAll(t, manifest) {
		if obj.GetKind() == "Deployment" && obj.GetName() == "nodemirror-operator" {
			operator = &appsv1.Deployment{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, operator); err != nil {
				t.Fatal(err)
			}
		}
	}
	if operator == nil || ptr.Deref(operator.Spec.Replicas, 1) != 3 {
		t.Fatalf("config/sharded: want a nodemirror-operator Deployment of 3 replicas, got %+v", operator)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(cfgs[0])
	hub, err := client.New(cfgs[0], client.Options{Scheme: framework.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	member := kubernetes.NewForConfigOrDie(cfgs[1])

	// A tenant with six clusters, each a shard of the member's nodes.
	kubeconfig, err := framework.Kubeconfig(memberEnv, "sharded-operator", []string{"system:masters"}, "")
	if err != nil {
		t.Fatal(err)
	}
	must(t, hub.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}}))
	must(t, hub.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: "member", Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}},
		Data:       map[string][]byte{"kubeconfig": kubeconfig},
	}))
	for c := range shardedClusters {
		for n := range shardedNodes {
			if _, err := simulator.CreateNode(ctx, member, simulator.NewNode(nodeOf(c, n), map[string]string{shardLabel: fmt.Sprint(c)})); err != nil {
				t.Fatal(err)
			}
		}
		must(t, hub.Create(ctx, &fleetv1.ManagedCluster{
			ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: clusterOf(c)},
			Spec: fleetv1.ManagedClusterSpec{
				KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: "member"},
				NodeSelector:        &metav1.LabelSelector{MatchLabels: map[string]string{shardLabel: fmt.Sprint(c)}},
			},
		}))
	}

	replicas := map[string]*process{}
	for i := range 3 {
		d := replicaOf(t, operator, i)
		replicas[d.Name+"-test"] = runDeployment(ctx, t, cs, cfgs[0], dir, d, "operator")
	}
	framework.WaitFor(t, 60*time.Second, "every cluster mirrored", func() bool {
		for c := range shardedClusters {
			var list fleetv1.NodeSnapshotList
			if err := hub.List(ctx, &list, client.InNamespace("fleet"), client.MatchingLabels{fleetv1.ClusterLabel: clusterOf(c)}); err != nil || len(list.Items) != shardedNodes {
				return false
			}
		}
		return true
	})

	// Watch the fence from outside for the rest of the test.
	var (
		mu       sync.Mutex
		overlaps []string
		samples  int
	)
	sampling, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampling.Err() == nil {
			held, err := liveHolders(sampling, cs, operator.Namespace)
			mu.Lock()
			if err == nil {
				samples++
				for key, holders := range held {
					if len(holders) > 1 {
						overlaps = append(overlaps, fmt.Sprintf("%s held by %v", key, holders))
					}
				}
			}
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()

	// The replicas started one after the other, the first with every
	// cluster: wait until each holds its rendezvous share of them.
	names := slices.Sorted(maps.Keys(replicas))
	placed(t, ctx, cs, operator.Namespace, names)
	held, err := liveHolders(ctx, cs, operator.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	byReplica := map[string][]string{}
	for key, holders := range held {
		if len(holders) == 1 && strings.HasPrefix(key, managedClusterKey("")) {
			byReplica[holders[0]] = append(byReplica[holders[0]], key)
		}
	}
	victim := ""
	for name, keys := range byReplica {
		if victim == "" || len(keys) > len(byReplica[victim]) {
			victim = name
		}
	}
	if victim == "" || replicas[victim] == nil {
		t.Fatalf("no replica holds a cluster: %v (replicas %v)", byReplica, slices.Collect(maps.Keys(replicas)))
	}
	lease, err := cs.CoordinationV1().Leases(operator.Namespace).Get(ctx, shard.LeasePrefix+victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leaseDuration := time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second
	t.Logf("killing %s, which holds %v; lease duration %s", victim, byReplica[victim], leaseDuration)

	killed := time.Now()
	if err := replicas[victim].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-replicas[victim].done
	// A change in each of its clusters while nobody mirrors them.
	var moved []int
	for c := range shardedClusters {
		if slices.Contains(byReplica[victim], managedClusterKey(clusterOf(c))) {
			moved = append(moved, c)
			must(t, simulator.PatchLabel(ctx, member, nodeOf(c, 0), "install.nodemirror.io/after-kill", ptr.To("yes")))
		}
	}
	framework.WaitFor(t, 3*leaseDuration, "the killed replica's clusters mirrored again", func() bool {
		for _, c := range moved {
			if snapshotLabel(ctx, hub, c, 0, "install.nodemirror.io/after-kill") != "yes" {
				return false
			}
		}
		return true
	})
	resumed := time.Since(killed)
	placed(t, ctx, cs, operator.Namespace, slices.DeleteFunc(names, func(n string) bool { return n == victim }))
	stopSampling()
	<-sampled
	t.Logf("clusters %v resumed %s after the kill; %d samples of the Leases", moved, resumed.Round(100*time.Millisecond), samples)
	if resumed > 2*leaseDuration {
		t.Errorf("the killed replica's clusters resumed after %s, want within two lease durations (%s)", resumed, 2*leaseDuration)
	}
	// The fence: nobody took them before the killed replica's Lease could
	// have expired (its last renewal was at most a retry period before the
	// kill; the default retry period is 2 s).
	if resumed < leaseDuration-3*time.Second {
		t.Errorf("the killed replica's clusters resumed %s after the kill, before its Lease (%s) could expire", resumed, leaseDuration)
	}
	if samples < 50 || len(overlaps) > 0 {
		t.Errorf("%d samples of the Leases; clusters held by two live Leases at once: %v", samples, overlaps)
	}
	for name, p := range replicas {
		if name == victim {
			continue
		}
		p.stop()
		if strings.Contains(strings.ToLower(p.logs.String()), "forbidden") {
			t.Errorf("%s was refused something by the hub's RBAC:\n%s", name, p.logs.String())
		}
	}
}

// replicaOf is replica i of the operator Deployment as one pod of it would
// run on this machine: its own pod name, probe and metrics ports, and
// loopback allowed for members (the member API server listens there).
func replicaOf(t *testing.T, d *appsv1.Deployment, i int) *appsv1.Deployment {
	t.Helper()
	r := d.DeepCopy()
	r.Name = fmt.Sprintf("%s-%d", d.Name, i)
	c := &r.Spec.Template.Spec.Containers[0]
	ports := map[string]string{}
	for _, flag := range []string{"--health-probe-bind-address=", "--metrics-bind-address="} {
		addr, err := framework.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		ports[flag] = addr
	}
	for j, arg := range c.Args {
		for flag, addr := range ports {
			if strings.HasPrefix(arg, flag) {
				c.Args[j] = flag + addr
			}
		}
	}
	c.Args = append(c.Args, "--member-allow-cidrs=127.0.0.0/8")
	_, probePort, _ := strings.Cut(ports["--health-probe-bind-address="], ":")
	for j := range c.Ports {
		if c.Ports[j].Name == c.ReadinessProbe.HTTPGet.Port.String() {
			fmt.Sscan(probePort, &c.Ports[j].ContainerPort)
		}
	}
	return r
}

// placed waits until every cluster is held by its rendezvous owner among
// names, and by no other live Lease.
func placed(t *testing.T, ctx context.Context, cs kubernetes.Interface, namespace string, names []string) {
	t.Helper()
	framework.WaitFor(t, time.Minute, fmt.Sprintf("every cluster held by its owner among %v", names), func() bool {
		held, err := liveHolders(ctx, cs, namespace)
		if err != nil {
			return false
		}
		for c := range shardedClusters {
			key := managedClusterKey(clusterOf(c))
			if h := held[key]; len(h) != 1 || h[0] != shard.Owner(key, names) {
				return false
			}
		}
		return true
	})
}

// liveHolders maps each shard key to the replicas whose Lease holds it and
// was renewed within its lease duration, by this machine's clock (the
// replicas run on it too).
func liveHolders(ctx context.Context, cs kubernetes.Interface, namespace string) (map[string][]string, error) {
	leases, err := cs.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: shard.MemberLabel + "=true"})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, l := range leases.Items {
		if !live(&l) {
			continue
		}
		var byKind map[string][]string
		if raw := l.Annotations[shard.HeldAnnotation]; raw != "" {
			if err := json.Unmarshal([]byte(raw), &byKind); err != nil {
				return nil, fmt.Errorf("lease %s: %w", l.Name, err)
			}
		}
		for kind, keys := range byKind {
			for _, key := range keys {
				out[kind+"/"+key] = append(out[kind+"/"+key], strings.TrimPrefix(l.Name, shard.LeasePrefix))
			}
		}
	}
	return out, nil
}

func live(l *coordinationv1.Lease) bool {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return time.Since(l.Spec.RenewTime.Time) < time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second
}

func managedClusterKey(name string) string { return managedcluster.ShardKind + "/fleet/" + name }

func clusterOf(c int) string { return fmt.Sprintf("c%d", c) }
func nodeOf(c, n int) string { return fmt.Sprintf("c%d-n%d", c, n) }
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshotLabel is a mirrored label of node n of cluster c, or "".
func snapshotLabel(ctx context.Context, hub client.Client, c, n int, key string) string {
	var list fleetv1.NodeSnapshotList
	if err := hub.List(ctx, &list, client.InNamespace("fleet"), client.MatchingFields{"spec.nodeName": nodeOf(c, n)}); err != nil || len(list.Items) != 1 {
		return ""
	}
	return list.Items[0].Status.Labels[key]
}
