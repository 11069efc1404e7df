package realcluster

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/cluster"
	"github.com/nodemirror/nodemirror/test/framework"
)

const fleet = "fleet"

var (
	snapshotsGVR = schema.GroupVersionResource{Group: fleetv1.GroupVersion.Group, Version: fleetv1.GroupVersion.Version, Resource: "nodesnapshots"}
	clustersGVR  = schema.GroupVersionResource{Group: fleetv1.GroupVersion.Group, Version: fleetv1.GroupVersion.Version, Resource: "managedclusters"}
)

// TestReleaseOnARealCluster installs the release as the README says, on a
// cluster whose node is real, registers that cluster as its own member with
// kubectl nodemirror join, and follows the node through real heartbeats, a
// kubelet that stops and comes back, an operator pod that is deleted and an
// upgrade.
func TestReleaseOnARealCluster(t *testing.T) {
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(real.Config)
	if err != nil {
		t.Fatal(err)
	}
	pluginDir := t.TempDir() // kubectl-nodemirror, for every step after join
	releases := t.TempDir()  // both releases' dist dirs, for every step
	rel := makeRelease(t, releases, "v0.0.0-realcluster.1")
	shipped := deployments(t, rel.manifest)
	operator, sidecar := shipped["nodemirror-operator"], shipped["nodemirror-sidecar"]

	if !t.Run("install", func(t *testing.T) {
		file := filepath.Join(rel.dir, "install.yaml")
		kubectl(t, "apply", "--server-side", "-f", file)
		for _, d := range []string{"nodemirror-operator", "nodemirror-sidecar"} {
			t.Log(kubectl(t, "-n", systemNamespace, "rollout", "status", "deployment/"+d, "--timeout=4m"))
		}
		checkPodsAsShipped(t, systemNamespace, operator)
		checkPodsAsShipped(t, systemNamespace, sidecar)
		for _, bin := range []string{"nodemirror-operator", "nodemirror-sidecar"} {
			uids := processUIDs(t, bin)
			if len(uids) == 0 {
				t.Fatalf("no %s process on the node", bin)
			}
			for _, u := range uids {
				if u != "65532/65532" {
					t.Errorf("%s runs as uid %s, want the images' nonroot 65532", bin, u)
				}
			}
		}
		checkOperatorServes(t, systemNamespace)
	}) {
		return
	}

	namespace(t, fleet)
	if !t.Run("join", func(t *testing.T) {
		plugin := pluginDir
		build := exec.Command("go", "build", "-o", filepath.Join(plugin, "kubectl-nodemirror"), "./cmd/nodemirror")
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building kubectl-nodemirror: %v\n%s", err, out)
		}
		pluginPath = plugin
		t.Log(kubectl(t, "nodemirror", "join", "real", "--member-context", "default", "--hub-context", "default", "-n", fleet))
		waitFor(t, 2*time.Minute, "ManagedCluster real Ready and Connected with both nodes mirrored", func(ctx context.Context) (bool, error) {
			return clusterCondition(ctx, dyn, fleetv1.ConditionReady) == "True" &&
				clusterCondition(ctx, dyn, fleetv1.ConditionConnected) == "True" &&
				snapshotStatus(t, "node-0") == "Ready" && snapshotStatus(t, workloadNode) == "Ready", nil
		})
		compareWithKubectlNodes(t, "node-0")
		compareWithKubectlNodes(t, workloadNode)
	}) {
		return
	}

	t.Run("heartbeats cost no hub writes", func(t *testing.T) {
		const window = 2 * time.Minute
		reader := serviceAccountToken(t, systemNamespace, "metrics-scraper", "nodemirror-metrics-reader", "")
		workloadNodeVersions := func() (string, string) {
			n, err := real.Client.CoreV1().Nodes().Get(ctx, workloadNode, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			l, err := real.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, workloadNode, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return n.ResourceVersion, l.Spec.RenewTime.Format(time.RFC3339Nano)
		}
		rvBefore, renewBefore := workloadNodeVersions()
		snapBefore := snapshotVersions(t, dyn)
		writesBefore, eventsBefore := operatorCounters(t, reader)
		time.Sleep(window)
		rvAfter, renewAfter := workloadNodeVersions()
		writesAfter, eventsAfter := operatorCounters(t, reader)
		if rvAfter == rvBefore || renewAfter == renewBefore {
			t.Fatalf("no heartbeat in %s: node resourceVersion %s → %s, lease renewTime %s → %s", window, rvBefore, rvAfter, renewBefore, renewAfter)
		}
		t.Logf("in %s the kubelet renewed its Lease (%s → %s) and updated its Node (resourceVersion %s → %s); the operator saw %v member events and made %v hub writes",
			window, renewBefore, renewAfter, rvBefore, rvAfter, eventsAfter-eventsBefore, writesAfter-writesBefore)
		if eventsAfter <= eventsBefore {
			t.Errorf("the operator saw no member event in %s of heartbeats: nothing was measured", window)
		}
		if writesAfter != writesBefore {
			t.Errorf("heartbeats cost %v hub writes, want 0", writesAfter-writesBefore)
		}
		if snap := snapshotVersions(t, dyn); snap != snapBefore {
			t.Errorf("the snapshot was rewritten (resourceVersion %s → %s)", snapBefore, snap)
		}
	})

	t.Run("a stopped kubelet is NotReady everywhere", func(t *testing.T) {
		token := serviceAccountToken(t, fleet, "viewer", "view", fleet)
		ui := openUI(t, serviceAddr(t, systemNamespace, "nodemirror-sidecar"), token)
		row := ui.rowText(workloadNode)
		ui.waitJS(workloadNode+" shown Ready in the UI", row+`.includes("Ready") && !`+row+`.includes("NotReady")`, time.Minute)

		stopped := time.Now()
		if err := real.Nodes[1].StopKubelet(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, "the node lifecycle controller to mark "+workloadNode, func(ctx context.Context) (bool, error) {
			n, err := real.Client.CoreV1().Nodes().Get(ctx, workloadNode, metav1.GetOptions{})
			return err == nil && cluster.NodeReady(n) != corev1.ConditionTrue, nil
		})
		t.Logf("%s marked %s %s after the kubelet stopped", workloadNode, kubectlNodeStatus(t, workloadNode), time.Since(stopped).Round(time.Second))
		waitFor(t, 30*time.Second, "the snapshot NotReady", func(ctx context.Context) (bool, error) {
			return strings.HasPrefix(snapshotStatus(t, workloadNode), "NotReady"), nil
		})
		compareWithKubectlNodes(t, workloadNode)
		ui.waitJS(workloadNode+" shown NotReady in the UI", row+`.includes("NotReady")`, 30*time.Second)
		if c := clusterCondition(ctx, dyn, fleetv1.ConditionConnected); c != "True" {
			t.Errorf("ManagedCluster Connected is %s while its API server answers, want True", c)
		}
		ui.screenshot(t, "ui-real-notready.png")

		if err := real.Nodes[1].StartKubelet(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Minute, workloadNode+" Ready again and its snapshot with it", func(ctx context.Context) (bool, error) {
			return snapshotStatus(t, workloadNode) == "Ready", nil
		})
		compareWithKubectlNodes(t, workloadNode)
		ui.waitJS(workloadNode+" shown Ready again in the UI", `!`+row+`.includes("NotReady")`, 30*time.Second)
		if c := clusterCondition(ctx, dyn, fleetv1.ConditionConnected); c != "True" {
			t.Errorf("ManagedCluster Connected is %s, want True", c)
		}
		// The pods NotReady meanwhile are Ready again before the next step.
		for _, d := range []string{"nodemirror-operator", "nodemirror-sidecar"} {
			kubectl(t, "-n", systemNamespace, "rollout", "status", "deployment/"+d, "--timeout=3m")
		}
		waitFor(t, 2*time.Minute, "every nodemirror pod Ready", func(ctx context.Context) (bool, error) {
			pods, err := real.Client.CoreV1().Pods(systemNamespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, p := range pods.Items {
				if !podReady(&p) {
					return false, nil
				}
			}
			return len(pods.Items) > 0, nil
		})
	})

	t.Run("the leader pod deleted: the standby takes over, no snapshot rewritten", func(t *testing.T) {
		before := settledSnapshots(t, dyn)
		old, err := leader(ctx, systemNamespace)
		if err != nil {
			t.Fatal(err)
		}
		pod := strings.SplitN(old, "_", 2)[0]
		kubectl(t, "-n", systemNamespace, "delete", "pod", pod, "--wait=false")
		waitFor(t, 2*time.Minute, "another operator pod to hold the Lease", func(ctx context.Context) (bool, error) {
			holder, err := leader(ctx, systemNamespace)
			return err == nil && holder != old && strings.HasPrefix(holder, "nodemirror-operator-"), nil
		})
		waitFor(t, time.Minute, "the new leader to report the cluster Ready", func(ctx context.Context) (bool, error) {
			return clusterCondition(ctx, dyn, fleetv1.ConditionReady) == "True", nil
		})
		time.Sleep(10 * time.Second) // a resync's worth of time to rewrite, if it would
		if after := snapshotVersions(t, dyn); after != before {
			t.Errorf("the new leader rewrote the snapshot (resourceVersion %s → %s)", before, after)
		}
	})

	upgraded := rel // the release installed last
	t.Run("upgrade to another release rolls out with no snapshot rewritten", func(t *testing.T) {
		before := settledSnapshots(t, dyn)
		next := makeRelease(t, releases, "v0.0.0-realcluster.2")
		upgraded = next
		kubectl(t, "apply", "--server-side", "-f", filepath.Join(next.dir, "install.yaml"))
		for _, d := range []string{"nodemirror-operator", "nodemirror-sidecar"} {
			t.Log(kubectl(t, "-n", systemNamespace, "rollout", "status", "deployment/"+d, "--timeout=4m"))
		}
		nextDeployments := deployments(t, next.manifest)
		checkPodsAsShipped(t, systemNamespace, nextDeployments["nodemirror-operator"])
		checkPodsAsShipped(t, systemNamespace, nextDeployments["nodemirror-sidecar"])
		waitFor(t, 2*time.Minute, "an upgraded operator pod to lead and the cluster Ready", func(ctx context.Context) (bool, error) {
			holder, err := leader(ctx, systemNamespace)
			if err != nil || !strings.HasPrefix(holder, "nodemirror-operator-") {
				return false, nil
			}
			pods := runningPods(t, systemNamespace, nextDeployments["nodemirror-operator"])
			for _, p := range pods {
				if strings.HasPrefix(holder, p.Name) {
					return clusterCondition(ctx, dyn, fleetv1.ConditionReady) == "True", nil
				}
			}
			return false, nil
		})
		time.Sleep(10 * time.Second)
		if after := snapshotVersions(t, dyn); after != before {
			t.Errorf("the upgrade rewrote the snapshot (resourceVersion %s → %s)", before, after)
		}
	})

	t.Run("drain: Drained once the evicted pods are gone, as kubectl drain", func(t *testing.T) { testDrain(t, dyn) })
	t.Run("the Helm chart in another namespace, instead of the manifest", func(t *testing.T) {
		testHelmChart(t, dyn, upgraded, filepath.Join(upgraded.dir, "install.yaml"))
	})
}

func clusterCondition(ctx context.Context, dyn dynamic.Interface, condition string) string {
	u, err := dyn.Resource(clustersGVR).Namespace(fleet).Get(ctx, "real", metav1.GetOptions{})
	if err != nil {
		return "missing"
	}
	var mc fleetv1.ManagedCluster
	if err := fromUnstructured(u, &mc); err != nil {
		return "unreadable"
	}
	c := meta.FindStatusCondition(mc.Status.Conditions, condition)
	if c == nil || c.ObservedGeneration != mc.Generation {
		return "unknown"
	}
	return string(c.Status)
}

// settledSnapshots waits until no snapshot has changed for 10s (a node that
// just came back still loses its taints and gains its conditions for a
// while) and returns their resourceVersions.
func settledSnapshots(t *testing.T, dyn dynamic.Interface) string {
	t.Helper()
	last, since := snapshotVersions(t, dyn), time.Now()
	waitFor(t, 2*time.Minute, "the snapshots to settle", func(ctx context.Context) (bool, error) {
		now := snapshotVersions(t, dyn)
		if now != last {
			last, since = now, time.Now()
		}
		return time.Since(since) >= 10*time.Second, nil
	})
	return last
}

// snapshotVersions names every snapshot with its resourceVersion.
func snapshotVersions(t *testing.T, dyn dynamic.Interface) string {
	t.Helper()
	list, err := dyn.Resource(snapshotsGVR).Namespace(fleet).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != len(real.Nodes) {
		t.Fatalf("%d snapshots in %s, want one per node", len(list.Items), fleet)
	}
	var s []string
	for _, u := range list.Items {
		s = append(s, u.GetName()+"@"+u.GetResourceVersion())
	}
	return strings.Join(s, ",")
}

// snapshotStatus is the STATUS column kubectl prints for a node's snapshot.
func snapshotStatus(t *testing.T, node string) string {
	t.Helper()
	out, err := kubectlErr("get", "nsnap", "-n", fleet, "--field-selector", "spec.nodeName="+node, "--no-headers", "-o", "custom-columns=S:.status.columns.status")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}

func kubectlNodeStatus(t *testing.T, node string) string {
	t.Helper()
	return strings.Fields(kubectl(t, "get", "node", node, "--no-headers"))[1]
}

// compareWithKubectlNodes: kubectl get nsnap prints the STATUS, ROLES and
// VERSION that kubectl get nodes prints for the same node.
func compareWithKubectlNodes(t *testing.T, name string) {
	t.Helper()
	node := strings.Fields(kubectl(t, "get", "node", name, "--no-headers"))
	snap := strings.Fields(kubectl(t, "get", "nsnap", "-n", fleet, "--field-selector", "spec.nodeName="+name, "--no-headers"))
	// NAME STATUS ROLES AGE VERSION / NAME CLUSTER NODE STATUS ROLES VERSION AGE
	if len(node) < 5 || len(snap) < 7 {
		t.Fatalf("unexpected columns: %q / %q", node, snap)
	}
	if node[1] != snap[3] || node[2] != snap[4] || node[4] != snap[5] {
		t.Errorf("kubectl get nodes: STATUS %s ROLES %s VERSION %s; kubectl get nsnap: %s %s %s", node[1], node[2], node[4], snap[3], snap[4], snap[5])
	}
}

// operatorCounters sums, over every operator pod scraped by its IP, the
// hub writes and the member events.
func operatorCounters(t *testing.T, token string) (writes, events float64) {
	t.Helper()
	pods, err := real.Client.CoreV1().Pods(systemNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=operator"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		code, body, err := framework.Scrape(p.Status.PodIP+":8443", token)
		if err != nil || code != http.StatusOK {
			t.Fatalf("scraping %s: %d %v", p.Name, code, err)
		}
		writes += sumSeries(body, "nodemirror_hub_writes_total")
		events += sumSeries(body, "nodemirror_member_events_total")
	}
	return writes, events
}

// sumSeries adds up every series of a metric in Prometheus' text format.
func sumSeries(body, name string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}
