package nodeoperation_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/nodeoperation"
	"github.com/nodemirror/nodemirror/test/framework"
)

// terminating says the pod is still there, with a deletionTimestamp.
func (w *workload) terminating(name string) bool {
	w.f.t.Helper()
	p, err := w.cs.CoreV1().Pods(w.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	w.f.must(err)
	return p.DeletionTimestamp != nil
}

// TestDrainWaitsUntilEvictedPodsAreGone: a kubelet ends the evicted pods
// 3 s after their eviction; meanwhile the node's result is Running and
// names them, and it says Drained only once the last one is gone.
func TestDrainWaitsUntilEvictedPodsAreGone(t *testing.T) {
	f := newFixture(t)
	node := f.node(0, "n", nil)
	f.cluster("east", operatorKubeconfig[0], 1, nil)
	w := f.workload(0, node)
	for _, p := range []string{"web-1", "web-2", "web-3"} {
		w.pod(p, "ReplicaSet", map[string]string{"app": "web"}, false)
	}
	w.pod("agent", "DaemonSet", nil, false)
	k := w.kubelet(3 * time.Second)
	name := f.create(drainSpec("east", node, fleetv1.DrainOptions{IgnoreDaemonSets: true, Timeout: &metav1.Duration{Duration: time.Minute}}))

	framework.WaitFor(t, 20*time.Second, "the running result to name the terminating pods", func() bool {
		res := result(f.get(name), "east", node)
		return res.Phase == fleetv1.OperationRunning && strings.Contains(res.Message, "waiting for 3 pods to terminate (3 evicted): ") &&
			strings.Contains(res.Message, w.ns+"/web-1, "+w.ns+"/web-2, "+w.ns+"/web-3")
	})
	var op *fleetv1.NodeOperation
	var seen time.Time
	framework.WaitFor(t, 30*time.Second, "the node's result", func() bool {
		op = f.get(name)
		seen = time.Now()
		return result(op, "east", node).Phase != fleetv1.OperationRunning
	})
	ended := k.Ended()
	if len(ended) != 3 {
		t.Fatalf("the node's result came with %d of its 3 evicted pods gone: %+v", len(ended), result(op, "east", node))
	}
	for _, e := range ended {
		if seen.Before(e.At) {
			t.Errorf("the result was there at %s, before pod %s was gone (%s)", seen.Format(time.StampMilli), e.Name, e.At.Format(time.StampMilli))
		}
	}
	res := result(op, "east", node)
	if res.Phase != fleetv1.OperationSucceeded || res.Reason != fleetv1.ReasonDrained ||
		res.Message != "drained: 3 pods evicted and gone, 0 already terminating, 1 DaemonSet pods left" {
		t.Errorf("result: %+v", res)
	}
	if op = f.wait(name); op.Status.Phase != fleetv1.OperationSucceeded {
		t.Errorf("operation %s", op.Status.Phase)
	}
	if w.gone("agent") {
		t.Errorf("the DaemonSet pod left")
	}
}

// TestDrainReplacedPodCountsAsGone: an evicted pod whose name comes back
// on another node, with another UID (as a StatefulSet's would), is gone
// from the drained node; the replacement is left alone.
func TestDrainReplacedPodCountsAsGone(t *testing.T) {
	f := newFixture(t)
	node := f.node(0, "n", nil)
	other := f.node(0, "other", nil)
	f.cluster("east", operatorKubeconfig[0], 2, nil)
	w := f.workload(0, node)
	old := w.pod("db-0", "StatefulSet", map[string]string{"app": "db"}, false)
	replaced := make(chan types.UID, 1)
	(&framework.Kubelet{Client: w.cs, Nodes: []string{node}, Delay: time.Second, Then: func(ctx context.Context, p corev1.Pod) {
		again := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Labels: p.Labels, OwnerReferences: p.OwnerReferences},
			Spec:       corev1.PodSpec{NodeName: other, Containers: p.Spec.Containers},
		}
		created, err := w.cs.CoreV1().Pods(p.Namespace).Create(ctx, again, metav1.CreateOptions{})
		if err != nil {
			t.Errorf("replacing %s: %v", p.Name, err)
			return
		}
		select {
		case replaced <- created.UID:
		default:
		}
	}}).Start(t)

	op := f.run(drainSpec("east", node, fleetv1.DrainOptions{Timeout: &metav1.Duration{Duration: time.Minute}}))
	if res := result(op, "east", node); res.Reason != fleetv1.ReasonDrained || !strings.Contains(res.Message, "drained: 1 pods evicted and gone, 0 already terminating") {
		t.Errorf("result: %+v", res)
	}
	var uid types.UID
	select {
	case uid = <-replaced:
	case <-time.After(5 * time.Second):
		t.Fatal("db-0 was not replaced")
	}
	p, err := w.cs.CoreV1().Pods(w.ns).Get(ctx, "db-0", metav1.GetOptions{})
	f.must(err)
	if p.UID != uid || p.UID == old.UID || p.Spec.NodeName != other || p.DeletionTimestamp != nil {
		t.Errorf("the replacement: uid %s (old %s), node %s, deletionTimestamp %v", p.UID, old.UID, p.Spec.NodeName, p.DeletionTimestamp)
	}
}

// TestDrainTimesOutWhilePodsTerminate: with no kubelet, evicted pods stay
// terminating, and at the timeout the node fails naming them.
func TestDrainTimesOutWhilePodsTerminate(t *testing.T) {
	f := newFixture(t)
	node := f.node(1, "n", nil)
	f.cluster("west", operatorKubeconfig[1], 1, nil)
	w := f.workload(1, node)
	w.pod("web-1", "ReplicaSet", map[string]string{"app": "web"}, false)
	w.pod("web-2", "ReplicaSet", map[string]string{"app": "web"}, false)
	op := f.run(drainSpec("west", node, fleetv1.DrainOptions{Timeout: &metav1.Duration{Duration: 3 * time.Second}}))
	res := result(op, "west", node)
	want := "2 pods still terminating after 3s: " + w.ns + "/web-1, " + w.ns + "/web-2; 2 pods evicted"
	if res.Phase != fleetv1.OperationFailed || res.Reason != fleetv1.ReasonPodsStillTerminating || res.Message != want {
		t.Errorf("result: %+v, want message %q", res, want)
	}
	if op.Status.Counts != counts(1, 0, 1, 0) {
		t.Errorf("counts %+v", op.Status.Counts)
	}
	if !w.terminating("web-1") || !w.terminating("web-2") {
		t.Errorf("the evicted pods are not terminating")
	}
}

// TestDrainSkipsPodsThatCannotFinish: drain.skipWaitForDeleteTimeout lets
// a drain go past pods terminating for longer; unset, a node that is not
// Ready (no kubelet confirms deletions there) is not waited on past its
// default (shortened here from 1m), a Ready one is, and 0s waits on both.
func TestDrainSkipsPodsThatCannotFinish(t *testing.T) {
	f := newFixture(t)
	ready := f.node(0, "ready", nil)
	readyToo := f.node(0, "ready-too", nil)
	down := f.node(0, "down", nil)
	downToo := f.node(0, "down-too", nil)
	for _, n := range []string{down, downToo} {
		f.must(framework.SetReady(ctx, members[0], n, corev1.ConditionFalse))
	}
	f.cluster("east", operatorKubeconfig[0], 4, nil)
	pod := map[string]*workload{}
	for _, n := range []string{ready, readyToo, down, downToo} {
		pod[n] = f.workload(0, n)
		pod[n].pod("web-1", "ReplicaSet", map[string]string{"app": "web"}, false)
	}
	grace := new(int64(1))

	// The field, on a Ready node: the pod's deletionTimestamp is 1 s after
	// its eviction, and 1 s later it is not waited for.
	op := f.run(drainSpec("east", ready, fleetv1.DrainOptions{GracePeriodSeconds: grace, SkipWaitForDeleteTimeout: &metav1.Duration{Duration: time.Second}, Timeout: &metav1.Duration{Duration: 30 * time.Second}}))
	want := "drained: 0 pods evicted and gone, 0 already terminating, 0 DaemonSet pods left, 1 terminating pod deleted more than skipWaitForDeleteTimeout (1s) ago not waited for"
	if res := result(op, "east", ready); res.Reason != fleetv1.ReasonDrained || res.Message != want {
		t.Errorf("with skipWaitForDeleteTimeout: %+v, want message %q", res, want)
	}
	if !pod[ready].terminating("web-1") {
		t.Errorf("the pod not waited for is not terminating")
	}

	// Unset: the NotReady node is drained, the Ready one waits until the
	// timeout.
	defer nodeoperation.SetNotReadyDeleteWait(time.Second)()
	op = f.run(fleetv1.NodeOperationSpec{
		Clusters: names("east"), Nodes: fleetv1.NodeTargets{Names: []string{readyToo, down}}, Action: fleetv1.ActionDrain,
		Drain: &fleetv1.DrainOptions{GracePeriodSeconds: grace, Timeout: &metav1.Duration{Duration: 6 * time.Second}},
	})
	want = "drained: 0 pods evicted and gone, 0 already terminating, 0 DaemonSet pods left, 1 terminating pod on a NotReady node not waited for"
	if res := result(op, "east", down); res.Reason != fleetv1.ReasonDrained || res.Message != want {
		t.Errorf("NotReady node: %+v, want message %q", res, want)
	}
	if res := result(op, "east", readyToo); res.Reason != fleetv1.ReasonPodsStillTerminating || !strings.Contains(res.Message, "1 pod still terminating after 6s: "+pod[readyToo].ns+"/web-1; 1 pods evicted") {
		t.Errorf("Ready node: %+v", res)
	}

	// 0s: the NotReady node is waited on too.
	op = f.run(drainSpec("east", downToo, fleetv1.DrainOptions{GracePeriodSeconds: grace, SkipWaitForDeleteTimeout: &metav1.Duration{}, Timeout: &metav1.Duration{Duration: 4 * time.Second}}))
	if res := result(op, "east", downToo); res.Reason != fleetv1.ReasonPodsStillTerminating {
		t.Errorf("NotReady node with skipWaitForDeleteTimeout 0s: %+v", res)
	}
}
