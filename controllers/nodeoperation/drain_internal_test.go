package nodeoperation

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// TestDrainWaitsForWhatMustLeave sorts a node's pods: terminating ones are
// waited for, but those past the skip bound; mirror, finished and (with
// ignoreDaemonSets) DaemonSet pods are not; and the message counts each.
func TestDrainWaitsForWhatMustLeave(t *testing.T) {
	now := time.Now()
	pod := func(name, uid string, deleted time.Duration, mutate ...func(*corev1.Pod)) corev1.Pod {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid),
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs", Controller: new(true)}}}}
		if deleted != 0 {
			p.DeletionTimestamp = &metav1.Time{Time: now.Add(-deleted)}
		}
		for _, m := range mutate {
			m(&p)
		}
		return p
	}
	pods := []corev1.Pod{
		pod("fresh", "u1", time.Second),
		pod("old", "u2", 2*time.Minute),
		pod("older", "u3", 3*time.Minute),
		pod("running", "u4", 0),
		pod("static", "u5", 2*time.Minute, func(p *corev1.Pod) { p.Annotations = map[string]string{mirrorPodAnnotation: "x"} }),
		pod("done", "u6", 2*time.Minute, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("agent", "u7", 0, func(p *corev1.Pod) { p.OwnerReferences[0].Kind = "DaemonSet" }),
	}
	plan := planDrain(pods, fleetv1.DrainOptions{IgnoreDaemonSets: true})
	if len(plan.evict) != 1 || plan.evict[0].Name != "running" || len(plan.terminating) != 3 || plan.daemonSet != 1 || len(plan.blocked) != 0 {
		t.Fatalf("plan: evict %v, terminating %v, %d DaemonSet pods, blocked %v", podNames(plan.evict), podNames(plan.terminating), plan.daemonSet, plan.blocked)
	}

	for _, tc := range []struct {
		name          string
		opts          fleetv1.DrainOptions
		ready         bool
		wait, skipped int
	}{
		{"Ready node, unset: every pod", fleetv1.DrainOptions{}, true, 3, 0},
		{"NotReady node, unset: within 1m past", fleetv1.DrainOptions{}, false, 1, 2},
		{"Ready node, 150s", fleetv1.DrainOptions{SkipWaitForDeleteTimeout: &metav1.Duration{Duration: 150 * time.Second}}, true, 2, 1},
		{"NotReady node, 0s: every pod", fleetv1.DrainOptions{SkipWaitForDeleteTimeout: &metav1.Duration{}}, false, 3, 0},
	} {
		after, _ := skipWait(tc.opts, tc.ready)
		wait, skipped := plan.split(after, now)
		if len(wait) != tc.wait || len(skipped) != tc.skipped {
			t.Errorf("%s: waits for %v, skips %v", tc.name, podNames(wait), podNames(skipped))
		}
	}

	// Of the skipped pods, "old" was evicted by this run, "older" was
	// terminating when it first looked.
	_, skipped := plan.split(time.Minute, now)
	res := drained(plan, skipped, map[types.UID]bool{"u1": true, "u2": true, "u9": true}, 2, "on a NotReady node")
	want := "drained: 2 pods evicted and gone, 1 already terminating, 1 DaemonSet pods left, 2 terminating pods on a NotReady node not waited for"
	if res.reason != fleetv1.ReasonDrained || res.message != want {
		t.Errorf("drained: %+v, want %q", res, want)
	}
}
