package simulator

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// TestEndTerminatingPods: a pod terminating on a simulated, Ready node is
// deleted once its deletionTimestamp has passed, as a kubelet would; one
// still in its grace period, one on a NotReady node, one on a node the
// simulator does not play and one not terminating stay.
func TestEndTerminatingPods(t *testing.T) {
	ctx := context.Background()
	past, future := &metav1.Time{Time: time.Now().Add(-time.Second)}, &metav1.Time{Time: time.Now().Add(time.Hour)}
	pod := func(name, node string, deleted *metav1.Time) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "work", Name: name, UID: types.UID("uid-" + name), DeletionTimestamp: deleted},
			Spec: corev1.PodSpec{NodeName: node}}
	}
	cs := fake.NewClientset(
		pod("done", "sim-node-000", past),
		pod("in-grace", "sim-node-000", future),
		pod("on-down-node", "sim-node-001", past),
		pod("elsewhere", "other-node", past),
		pod("running", "sim-node-000", nil),
	)
	s := New(cs, Options{})
	s.nodes = []string{"sim-node-000", "sim-node-001"}
	s.notReady["sim-node-001"] = time.Now().Add(time.Minute)
	if err := s.endTerminatingPods(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Pods("work").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, p := range list.Items {
		left = append(left, p.Name)
	}
	slices.Sort(left)
	if want := []string{"elsewhere", "in-grace", "on-down-node", "running"}; !slices.Equal(left, want) {
		t.Errorf("pods left %v, want %v", left, want)
	}
}
