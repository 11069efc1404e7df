package realcluster

import (
	"context"

	"math"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/cluster"
)

const shop = "shop"

var operationsGVR = fleetv1.GroupVersion.WithResource("nodeoperations")

// workloadPod is a pod template on the workload node: the pause image,
// ending after a preStop sleep within its grace period, as a server that
// drains its connections does.
func workloadPod(app string, preStop int64, volumes ...corev1.Volume) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{
			Tolerations:                   []corev1.Toleration{{Key: "nodemirror.test/workloads", Operator: corev1.TolerationOpExists}},
			TerminationGracePeriodSeconds: ptr.To(preStop + 4),
			Volumes:                       volumes,
			Containers: []corev1.Container{{
				Name: app, Image: cluster.PauseImage, ImagePullPolicy: corev1.PullNever,
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: preStop}}},
			}},
		},
	}
}

func setUpShop(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	namespace(t, shop)
	apps := real.Client.AppsV1()
	deploy := func(name string, replicas int32, tmpl corev1.PodTemplateSpec) {
		if _, err := apps.Deployments(shop).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels}, Template: tmpl},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deploy("web", 2, workloadPod("web", 8))
	deploy("cache", 1, workloadPod("cache", 6, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}))
	agent := workloadPod("agent", 1)
	if _, err := apps.DaemonSets(shop).Create(ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: agent.Labels}, Template: agent},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := real.Client.PolicyV1().PodDisruptionBudgets(shop).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// placeOnWorkloadNode puts every Deployment pod of the shop on node-1:
// node-0 cordoned meanwhile, the Deployments restarted, then uncordoned,
// so that evicted pods find room on node-0.
func placeOnWorkloadNode(t *testing.T) {
	t.Helper()
	kubectl(t, "uncordon", workloadNode)
	kubectl(t, "cordon", "node-0")
	defer kubectl(t, "uncordon", "node-0")
	waitFor(t, 30*time.Second, "the disruption controller to count the budget", func(ctx context.Context) (bool, error) {
		pdb, err := real.Client.PolicyV1().PodDisruptionBudgets(shop).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && pdb.Status.ObservedGeneration == pdb.Generation, nil
	})
	kubectl(t, "-n", shop, "rollout", "restart", "deployment/web", "deployment/cache")
	for _, d := range []string{"deployment/web", "deployment/cache", "daemonset/agent"} {
		kubectl(t, "-n", shop, "rollout", "status", d, "--timeout=3m")
	}
	waitFor(t, time.Minute, "only the new pods, all on "+workloadNode, func(ctx context.Context) (bool, error) {
		pods, err := real.Client.CoreV1().Pods(shop).List(ctx, metav1.ListOptions{LabelSelector: "app in (web,cache)"})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Spec.NodeName != workloadNode || !podReady(&p) {
				return false, nil
			}
		}
		return len(pods.Items) == 3, nil
	})
}

// podsOn lists the shop's pods on node by UID.
func podsOn(ctx context.Context, node string) (map[types.UID]corev1.Pod, error) {
	list, err := real.Client.CoreV1().Pods(shop).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	pods := map[types.UID]corev1.Pod{}
	for _, p := range list.Items {
		pods[p.UID] = p
	}
	return pods, nil
}

func appOf(p corev1.Pod) string { return p.Labels["app"] }

// testDrain drains the workload node with a NodeOperation and then with
// the stock kubectl drain, on the same pods, and compares.
func testDrain(t *testing.T, dyn dynamic.Interface) {
	ctx := context.Background()
	kubectl(t, "apply", "-k", root+"/config/member-operations")
	setUpShop(t)
	placeOnWorkloadNode(t)

	// A pod no controller manages is refused by both without force.
	orphan := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Namespace: shop}, Spec: workloadPod("orphan", 1).Spec}
	orphan.Spec.NodeName = workloadNode
	if _, err := real.Client.CoreV1().Pods(shop).Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	op := runDrain(t, dyn, "drain-refused", 30*time.Second)
	res := nodeResult(t, op)
	if res.Phase != fleetv1.OperationFailed || res.Reason != fleetv1.ReasonDrainBlocked || !strings.Contains(res.Message, "shop/orphan") {
		t.Errorf("NodeOperation on an unmanaged pod: %s %s %q, want Failed DrainBlocked naming shop/orphan", res.Phase, res.Reason, res.Message)
	}
	out, err := kubectlErr("drain", workloadNode, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=30s")
	if err == nil || !strings.Contains(out, "shop/orphan") || !strings.Contains(out, "declare no controller") {
		t.Errorf("kubectl drain on an unmanaged pod: %v\n%s", err, out)
	}
	if err := real.Client.CoreV1().Pods(shop).Delete(ctx, "orphan", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	placeOnWorkloadNode(t)

	// The NodeOperation: its result may come only once every evicted pod
	// is gone; the budget keeps one web pod available throughout.
	before, err := podsOn(ctx, workloadNode)
	if err != nil {
		t.Fatal(err)
	}
	var mustGo []types.UID
	var daemonSet types.UID
	for uid, p := range before {
		if appOf(p) == "agent" {
			daemonSet = uid
		} else {
			mustGo = append(mustGo, uid)
		}
	}
	started := time.Now()
	var lastGone time.Time
	minWebReady := math.MaxInt
	op = runDrainWatching(t, dyn, "drain-workloads", 3*time.Minute, func(op *fleetv1.NodeOperation) {
		now, err := podsOn(ctx, workloadNode)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, uid := range mustGo {
			if p, ok := now[uid]; ok {
				left = append(left, p.Name)
			}
		}
		if len(left) > 0 {
			lastGone = time.Time{}
		} else if lastGone.IsZero() {
			lastGone = time.Now()
		}
		if r := findResult(op); r != nil && r.Phase == fleetv1.OperationSucceeded && len(left) > 0 {
			t.Errorf("the NodeOperation reported %s %q while %v still existed", r.Reason, r.Message, left)
		}
		web, _ := real.Client.CoreV1().Pods(shop).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		ready := 0
		for _, p := range web.Items {
			if podReady(&p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		minWebReady = min(minWebReady, ready)
	})
	opTook := time.Since(started)
	res = nodeResult(t, op)
	if res.Phase != fleetv1.OperationSucceeded || res.Reason != fleetv1.ReasonDrained {
		t.Fatalf("NodeOperation drain: %s %s %q", res.Phase, res.Reason, res.Message)
	}
	if lastGone.IsZero() {
		t.Errorf("evicted pods still existed when the result came")
	}
	if minWebReady < 1 {
		t.Errorf("the budget (minAvailable 1) did not hold: %d web pods ready at one point", minWebReady)
	}
	after, err := podsOn(ctx, workloadNode)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := after[daemonSet]; !ok {
		t.Errorf("the DaemonSet pod left the node")
	}
	t.Logf("NodeOperation: %q in %s (last evicted pod gone %s after the start)", res.Message, opTook.Round(100*time.Millisecond), lastGone.Sub(started).Round(100*time.Millisecond))

	// The same pods drained by the stock kubectl drain.
	placeOnWorkloadNode(t)
	before, err = podsOn(ctx, workloadNode)
	if err != nil {
		t.Fatal(err)
	}
	var wantEvicted []string
	for _, p := range before {
		if appOf(p) != "agent" {
			wantEvicted = append(wantEvicted, "pod/"+p.Name)
		}
	}
	started = time.Now()
	out = kubectl(t, "drain", workloadNode, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=3m")
	kubectlTook := time.Since(started)
	var evicted []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "evicted" {
			evicted = append(evicted, f[0])
		}
	}
	slices.Sort(evicted)
	slices.Sort(wantEvicted)
	if !slices.Equal(evicted, wantEvicted) {
		t.Errorf("kubectl drain evicted %v, the NodeOperation the same kind of set %v", evicted, wantEvicted)
	}
	if !strings.Contains(out, "ignoring DaemonSet-managed Pods: shop/agent-") {
		t.Errorf("kubectl drain did not leave the DaemonSet pod:\n%s", out)
	}
	t.Logf("kubectl drain took %s, the NodeOperation %s", kubectlTook.Round(100*time.Millisecond), opTook.Round(100*time.Millisecond))
	// kubectl waits 5s before it retries an eviction a budget refused, the
	// operator backs off from 250ms: the NodeOperation may be faster, never
	// more than a few seconds slower.
	if opTook > kubectlTook+5*time.Second {
		t.Errorf("the NodeOperation took %s, kubectl drain %s: more than 5s slower", opTook, kubectlTook)
	}
	kubectl(t, "uncordon", workloadNode)
}

// runDrain creates a drain of the workload node and waits for its end.
func runDrain(t *testing.T, dyn dynamic.Interface, name string, timeout time.Duration) *fleetv1.NodeOperation {
	return runDrainWatching(t, dyn, name, timeout, func(*fleetv1.NodeOperation) {})
}

func runDrainWatching(t *testing.T, dyn dynamic.Interface, name string, timeout time.Duration, each func(*fleetv1.NodeOperation)) *fleetv1.NodeOperation {
	t.Helper()
	ctx := context.Background()
	op := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": fleetv1.GroupVersion.String(), "kind": "NodeOperation",
		"metadata": map[string]any{"name": name, "namespace": fleet},
		"spec": map[string]any{
			"clusters": map[string]any{"names": []any{"real"}},
			"nodes":    map[string]any{"names": []any{workloadNode}},
			"action":   "drain",
			"drain":    map[string]any{"ignoreDaemonSets": true, "deleteEmptyDirData": true, "timeout": timeout.String()},
		},
	}}
	if _, err := dyn.Resource(operationsGVR).Namespace(fleet).Create(ctx, op, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last fleetv1.NodeOperation
	waitFor(t, timeout+time.Minute, "NodeOperation "+name+" to end", func(ctx context.Context) (bool, error) {
		u, err := dyn.Resource(operationsGVR).Namespace(fleet).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = fleetv1.NodeOperation{}
		if err := fromUnstructured(u, &last); err != nil {
			return false, err
		}
		each(&last)
		return last.Status.Phase == fleetv1.OperationSucceeded || last.Status.Phase == fleetv1.OperationFailed, nil
	})
	return &last
}

func findResult(op *fleetv1.NodeOperation) *fleetv1.NodeResult {
	for i, r := range op.Status.Results {
		if r.Node == workloadNode {
			return &op.Status.Results[i]
		}
	}
	return nil
}

func nodeResult(t *testing.T, op *fleetv1.NodeOperation) fleetv1.NodeResult {
	t.Helper()
	r := findResult(op)
	if r == nil {
		t.Fatalf("NodeOperation %s has no result for %s: %+v", op.Name, workloadNode, op.Status)
	}
	return *r
}
