package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

	"github.com/nodemirror/nodemirror/test/framework"
)

// TestOperatorKilledMidDrain SIGKILLs the operator binary while a drain
// waits on a PodDisruptionBudget, lifts the budget, starts a new operator,
// and expects the drain to resume and finish with the right counts: what
// the first one did is not done twice, nothing is lost.
func TestOperatorKilledMidDrain(t *testing.T) {
	cp := framework.StartControlPlanes(t, 1)
	dir := t.TempDir()
	hubKubeconfig := writeKubeconfig(t, cp.Hub, dir, "hub")
	memberKubeconfig := writeKubeconfig(t, cp.Members[0], dir, "member")
	k := kubectl{t: t, bin: filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), kubeconfig: hubKubeconfig}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	member := kubernetes.NewForConfigOrDie(cp.MemberConfigs[0])
	if _, err := framework.CreateNode(ctx, member, framework.NewNode("node-a", nil)); err != nil {
		t.Fatal(err)
	}
	// Pods bound to the node, as a scheduler would bind them (envtest has
	// none), and a budget whose status is set as the disruption controller
	// sets it: no disruption allowed.
	ns := "work"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := member.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	must(err)
	_, err = member.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	must(err)
	for name, app := range map[string]string{"web-1": "web", "db-0": "db"} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": app}, OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app, UID: types.UID("uid-" + app), Controller: new(true),
			}}},
			Spec: corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}},
		}
		p, err := member.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		must(err)
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		_, err = member.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		must(err)
	}
	_, err = member.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: new(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}},
	}, metav1.CreateOptions{})
	must(err)
	setAllowed := func(allowed int32) {
		t.Helper()
		pdb, err := member.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "db", metav1.GetOptions{})
		must(err)
		pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: allowed, CurrentHealthy: 1 + allowed, DesiredHealthy: 1, ExpectedPods: 1 + allowed}
		_, err = member.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
		must(err)
	}
	setAllowed(0)
	gone := func(name string) bool {
		p, err := member.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil)
	}

	probeAddr := framework.FreePort(t)
	args := []string{"--kubeconfig", hubKubeconfig, "--metrics-bind-address", "0", "--health-probe-bind-address", probeAddr,
		"--member-probe-interval", "500ms", "--member-allow-cidrs", "127.0.0.1/32"}
	first := startBinary(t, dir, "operator", "http://"+probeAddr+"/readyz", args...)
	k.registerCluster("edge", memberKubeconfig)
	k.must(`apiVersion: fleet.nodemirror.io/v1alpha1
kind: NodeOperation
metadata: {name: drain-a, namespace: fleet}
spec:
  clusters: {names: [edge]}
  nodes: {names: [node-a]}
  action: drain
  drain: {timeout: 3m}
`, "apply", "-f", "-")
	phase := func() string {
		out, _ := k.run("", "-n", "fleet", "get", "nodeop", "drain-a", "-o", "jsonpath={.status.results[0].phase}")
		return out
	}
	framework.WaitFor(t, 30*time.Second, "web-1 evicted and the drain held by the budget", func() bool {
		return gone("web-1") && !gone("db-0") && phase() == "Running"
	})

	// SIGKILL: no chance to write a last status or release anything.
	must(first.cmd.Process.Kill())
	<-first.exited
	setAllowed(1)
	startBinary(t, dir, "operator", "http://"+probeAddr+"/readyz", args...)
	// The node is drained once its evicted pods are gone: once the new
	// operator has evicted db-0, a stand-in kubelet ends both.
	framework.WaitFor(t, 60*time.Second, "db-0 evicted by the new operator", func() bool { return gone("db-0") })
	kubelet := (&framework.Kubelet{Client: member, Nodes: []string{"node-a"}, Delay: time.Second}).Start(t)
	k.must("", "-n", "fleet", "wait", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=90s", "nodeoperation/drain-a")
	out := k.must("", "-n", "fleet", "get", "nodeop", "drain-a", "-o", "jsonpath={.status.counts.total} {.status.counts.succeeded} {.status.counts.failed} {.status.results[0].reason}|{.status.results[0].message}")
	t.Logf("after the restart: %s", out)
	if !strings.HasPrefix(out, "1 1 0 Drained|drained: 1 pods evicted and gone, 1 already terminating") {
		t.Errorf("counts and result after the restart = %q, want 1 total, 1 succeeded, 0 failed, Drained with web-1 evicted before and db-0 after", out)
	}
	if n := len(kubelet.Ended()); n != 2 {
		t.Errorf("drained with %d of its 2 evicted pods gone", n)
	}
	if !gone("db-0") {
		t.Errorf("db-0 was not evicted after the budget allowed it")
	}
	n, err := member.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	must(err)
	if !n.Spec.Unschedulable {
		t.Errorf("the drained node is not cordoned")
	}
	// One eviction used the one disruption the budget allowed.
	pdb, err := member.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "db", metav1.GetOptions{})
	must(err)
	if pdb.Status.DisruptionsAllowed != 0 {
		t.Errorf("budget after the drain: %s", fmt.Sprint(pdb.Status))
	}
}
