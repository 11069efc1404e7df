package nodeoperation_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// workload is a member namespace with pods bound to one node, as a
// scheduler and kubelet would leave them (envtest runs neither).
type workload struct {
	f    *fixture
	cs   kubernetes.Interface
	ns   string
	node string
}

func (f *fixture) workload(member int, node string) *workload {
	f.t.Helper()
	cs := members[member]
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "work-"}}
	ns, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	f.must(err)
	// No controller manager creates it, and pods need it.
	_, err = cs.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	f.must(err)
	return &workload{f: f, cs: cs, ns: ns.Name, node: node}
}

// pod creates a running, ready pod on the node, owned by a controller of
// kind ownerKind ("" for none), with an emptyDir volume if asked.
func (w *workload) pod(name, ownerKind string, labels map[string]string, emptyDir bool, annotations ...string) *corev1.Pod {
	w.f.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   w.node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}},
		},
	}
	if ownerKind != "" {
		apiVersion := "apps/v1"
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: apiVersion, Kind: ownerKind, Name: name + "-owner", UID: types.UID("uid-" + name), Controller: new(true)}}
	}
	if len(annotations) == 2 {
		// A mirror pod, as a kubelet creates it for a static pod.
		p.Annotations = map[string]string{annotations[0]: annotations[1]}
		p.Spec.AutomountServiceAccountToken = new(false)
	}
	if emptyDir {
		p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	}
	p, err := w.cs.CoreV1().Pods(w.ns).Create(ctx, p, metav1.CreateOptions{})
	w.f.must(err)
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	p, err = w.cs.CoreV1().Pods(w.ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	w.f.must(err)
	return p
}

// budget creates a PodDisruptionBudget over pods labelled app=app and
// sets its status as the disruption controller would, allowing allowed
// disruptions.
func (w *workload) budget(name, app string, allowed int32) {
	w.f.t.Helper()
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: new(intstr.FromInt32(1)),
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
		},
	}
	pdb, err := w.cs.PolicyV1().PodDisruptionBudgets(w.ns).Create(ctx, pdb, metav1.CreateOptions{})
	w.f.must(err)
	w.setAllowed(pdb, allowed)
}

func (w *workload) setAllowed(pdb *policyv1.PodDisruptionBudget, allowed int32) {
	w.f.t.Helper()
	pdb.Status = policyv1.PodDisruptionBudgetStatus{
		ObservedGeneration: pdb.Generation, DisruptionsAllowed: allowed,
		CurrentHealthy: 1 + allowed, DesiredHealthy: 1, ExpectedPods: 1 + allowed,
	}
	_, err := w.cs.PolicyV1().PodDisruptionBudgets(w.ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
	w.f.must(err)
}

// lift lets the budget allow one disruption, as the disruption controller
// would once a replacement pod is ready elsewhere.
func (w *workload) lift(name string) {
	w.f.t.Helper()
	pdb, err := w.cs.PolicyV1().PodDisruptionBudgets(w.ns).Get(ctx, name, metav1.GetOptions{})
	w.f.must(err)
	w.setAllowed(pdb, 1)
}

// gone says the pod was evicted: deleted, or terminating (no kubelet
// here finishes it, but a stand-in one: see kubelet).
func (w *workload) gone(name string) bool {
	w.f.t.Helper()
	p, err := w.cs.CoreV1().Pods(w.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true
	}
	w.f.must(err)
	return p.DeletionTimestamp != nil
}

// kubelet starts a stand-in kubelet for the workload's node: it ends the
// node's terminating pods delay after it saw them so.
func (w *workload) kubelet(delay time.Duration) *framework.Kubelet {
	w.f.t.Helper()
	return (&framework.Kubelet{Client: w.cs, Nodes: []string{w.node}, Delay: delay}).Start(w.f.t)
}

func drainSpec(cluster, node string, opts fleetv1.DrainOptions) fleetv1.NodeOperationSpec {
	return fleetv1.NodeOperationSpec{Clusters: names(cluster), Nodes: fleetv1.NodeTargets{Names: []string{node}}, Action: fleetv1.ActionDrain, Drain: &opts}
}

// TestDrainHonoursBudgets drains a node with pods of every kind: the
// evictable ones leave through the Eviction API, the DaemonSet pod stays,
// the one a PodDisruptionBudget protects is retried until the timeout and
// reported with its budget.
func TestDrainHonoursBudgets(t *testing.T) {
	f := newFixture(t)
	node := f.node(0, "n", nil)
	f.cluster("east", operatorKubeconfig[0], 1, nil)
	w := f.workload(0, node)
	w.pod("web-1", "ReplicaSet", map[string]string{"app": "web"}, false)
	w.pod("cache-1", "ReplicaSet", map[string]string{"app": "cache"}, true)
	w.pod("lonely", "", nil, false)
	w.pod("agent", "DaemonSet", nil, false)
	w.pod("db-0", "StatefulSet", map[string]string{"app": "db"}, false)
	w.budget("db", "db", 0)
	w.pod("static", "", nil, false, "kubernetes.io/config.mirror", "x")

	// Without the options, kubectl's refusals.
	op := f.run(drainSpec("east", node, fleetv1.DrainOptions{}))
	res := result(op, "east", node)
	if res.Reason != fleetv1.ReasonDrainBlocked {
		t.Fatalf("drain without options: %+v", res)
	}
	for _, want := range []string{"DaemonSet-managed", w.ns + "/agent", "emptyDir", w.ns + "/cache-1", "not managed by a controller", w.ns + "/lonely"} {
		if !strings.Contains(res.Message, want) {
			t.Errorf("message %q lacks %q", res.Message, want)
		}
	}
	if w.gone("web-1") || !f.memberNode(0, node).Spec.Unschedulable {
		t.Errorf("a refused drain evicted pods, or did not cordon")
	}

	// Dry run: says what it would evict.
	op = f.run(func() fleetv1.NodeOperationSpec {
		s := drainSpec("east", node, fleetv1.DrainOptions{IgnoreDaemonSets: true, DeleteEmptyDirData: true, Force: true})
		s.DryRun = true
		return s
	}())
	if res := result(op, "east", node); res.Reason != fleetv1.ReasonDryRun || !strings.Contains(res.Message, "evict 4 pods") || w.gone("web-1") {
		t.Errorf("dry run drain: %+v", res)
	}

	name := f.create(drainSpec("east", node, fleetv1.DrainOptions{
		IgnoreDaemonSets: true, DeleteEmptyDirData: true, Force: true,
		Timeout: &metav1.Duration{Duration: 4 * time.Second}, GracePeriodSeconds: new(int64(10)),
	}))
	framework.WaitFor(t, 10*time.Second, "the evictable pods to leave while the budget holds", func() bool {
		return w.gone("web-1") && w.gone("cache-1") && w.gone("lonely")
	})
	if got := f.kstatus(name); got != status.InProgressStatus {
		t.Errorf("kstatus while the drain waits: %s, want InProgress", got)
	}
	// Status is written in batches: within a moment it says so.
	framework.WaitFor(t, 3*time.Second, "status to say the node's drain runs", func() bool {
		op := f.get(name)
		return op.Status.Phase == fleetv1.OperationRunning && result(op, "east", node).Phase == fleetv1.OperationRunning && op.Status.Counts.Running == 1
	})
	op = f.wait(name)
	res = result(op, "east", node)
	if res.Phase != fleetv1.OperationFailed || res.Reason != fleetv1.ReasonDisruptionBudget ||
		!strings.Contains(res.Message, "pod "+w.ns+"/db-0 (PodDisruptionBudget "+w.ns+"/db)") || !strings.Contains(res.Message, "3 pods evicted") {
		t.Errorf("budget-held drain: %+v", res)
	}
	if op.Status.Counts != counts(1, 0, 1, 0) || f.kstatus(name) != status.FailedStatus {
		t.Errorf("counts %+v", op.Status.Counts)
	}
	if w.gone("db-0") || w.gone("agent") || w.gone("static") {
		t.Errorf("the protected, DaemonSet or mirror pod left")
	}
	p, err := w.cs.CoreV1().Pods(w.ns).Get(ctx, "web-1", metav1.GetOptions{})
	if err == nil && (p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 10) {
		t.Errorf("evicted with grace %v, want 10", p.DeletionGracePeriodSeconds)
	}
}

// TestDrainResumesAfterRestart stops the operator while a drain waits on
// a budget, starts a new one and lifts the budget: the drain resumes and
// finishes, without evicting anything twice.
func TestDrainResumesAfterRestart(t *testing.T) {
	f := newFixture(t)
	a := f.node(0, "a", nil)
	b := f.node(0, "b", nil)
	f.cluster("east", operatorKubeconfig[0], 2, nil)
	w := f.workload(0, a)
	w.pod("web-1", "ReplicaSet", map[string]string{"app": "web"}, false)
	w.pod("db-0", "StatefulSet", map[string]string{"app": "db"}, false)
	w.budget("db", "db", 0)
	name := f.create(fleetv1.NodeOperationSpec{
		Clusters: names("east"), Nodes: fleetv1.NodeTargets{Names: []string{a, b}}, Action: fleetv1.ActionDrain,
		Drain: &fleetv1.DrainOptions{Timeout: &metav1.Duration{Duration: 2 * time.Minute}},
	})
	framework.WaitFor(t, 20*time.Second, "node b drained and a held by its budget", func() bool {
		op := f.get(name)
		return result(op, "east", b).Phase == fleetv1.OperationSucceeded && result(op, "east", a).Phase == fleetv1.OperationRunning && w.gone("web-1")
	})
	restartOperator(t)
	w.lift("db")
	// Once the new run has evicted db-0 (and so has seen web-1
	// terminating), a kubelet ends both, and only then is the node drained.
	framework.WaitFor(t, 40*time.Second, "db-0 evicted after the restart", func() bool { return w.gone("db-0") })
	if res := result(f.get(name), "east", a); res.Phase != fleetv1.OperationRunning {
		t.Errorf("node a %s with its evicted pods still terminating: %+v", res.Phase, res)
	}
	k := w.kubelet(0)
	op := f.wait(name)
	if op.Status.Phase != fleetv1.OperationSucceeded || op.Status.Counts != counts(2, 2, 0, 0) {
		t.Fatalf("after the restart: %s %+v %+v", op.Status.Phase, op.Status.Counts, op.Status.Results)
	}
	if res := result(op, "east", a); res.Reason != fleetv1.ReasonDrained || !strings.Contains(res.Message, "1 pods evicted and gone, 1 already terminating") {
		t.Errorf("resumed node: %+v", res)
	}
	if len(k.Ended()) != 2 {
		t.Errorf("drained with %d of its 2 pods ended: %+v", len(k.Ended()), k.Ended())
	}
	if !w.gone("db-0") {
		t.Errorf("db-0 still there")
	}
	pdb, err := w.cs.PolicyV1().PodDisruptionBudgets(w.ns).Get(ctx, "db", metav1.GetOptions{})
	f.must(err)
	if pdb.Status.DisruptionsAllowed != 0 || len(pdb.Status.DisruptedPods) != 1 {
		t.Errorf("budget status after one eviction: %+v", pdb.Status)
	}
}

// TestDeleteStopsAndTTL: deleting a running operation stops it and what
// it did stays; a finished one with ttlSecondsAfterFinished goes by itself.
func TestDeleteStopsAndTTL(t *testing.T) {
	f := newFixture(t)
	node := f.node(1, "n", nil)
	f.cluster("west", operatorKubeconfig[1], 1, nil)
	w := f.workload(1, node)
	w.pod("db-0", "StatefulSet", map[string]string{"app": "db"}, false)
	w.budget("db", "db", 0)
	name := f.create(drainSpec("west", node, fleetv1.DrainOptions{Timeout: &metav1.Duration{Duration: time.Minute}}))
	framework.WaitFor(t, 20*time.Second, "the drain to wait on its budget", func() bool {
		return result(f.get(name), "west", node).Phase == fleetv1.OperationRunning
	})
	f.must(hub.Delete(ctx, f.get(name)))
	framework.WaitFor(t, 20*time.Second, "the deleted operation to go", func() bool {
		err := hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, &fleetv1.NodeOperation{})
		return apierrors.IsNotFound(err)
	})
	w.lift("db")
	time.Sleep(2 * time.Second)
	if w.gone("db-0") {
		t.Errorf("a deleted operation kept evicting")
	}
	if !f.memberNode(1, node).Spec.Unschedulable {
		t.Errorf("what the deleted operation did was undone")
	}

	ttl := f.create(fleetv1.NodeOperationSpec{Clusters: names("west"), Nodes: fleetv1.NodeTargets{Names: []string{node}}, Action: fleetv1.ActionUncordon, TTLSecondsAfterFinished: new(int32(1))})
	framework.WaitFor(t, 20*time.Second, "the operation to go after its TTL", func() bool {
		err := hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: ttl}, &fleetv1.NodeOperation{})
		return apierrors.IsNotFound(err)
	})
	if f.memberNode(1, node).Spec.Unschedulable {
		t.Errorf("uncordon did not happen")
	}
}
