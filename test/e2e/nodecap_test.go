package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/test/framework"
)

// TestNodeCapLeavesTheRestOutAndSaysSo runs an operator capped at two
// nodes per cluster against a member with three: two are mirrored, the
// cluster is Stalled with TooManyNodes, and when a mirrored node goes the
// third takes its place.
func TestNodeCapLeavesTheRestOutAndSaysSo(t *testing.T) {
	cp := framework.StartControlPlanes(t, 1)
	dir := t.TempDir()
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	hubK := kubectl{t: t, bin: bin, kubeconfig: writeKubeconfig(t, cp.Hub, dir, "hub")}
	memberKubeconfig := writeKubeconfig(t, cp.Members[0], dir, "member")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	member := kubernetes.NewForConfigOrDie(cp.MemberConfigs[0])
	for i := range 3 {
		if _, err := framework.CreateNode(ctx, member, framework.NewNode(fmt.Sprintf("node-%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	runOperator(t, ctx, cp.HubConfig, func(r *managedcluster.Reconciler) { r.MaxNodesPerCluster = 2 })
	hubK.registerClusterNoWait("capped", memberKubeconfig)
	hubK.must("", "-n", "fleet", "wait", "managedcluster/capped", "--for=condition=Stalled", "--timeout=60s")
	snapshots := func() int {
		out := hubK.must("", "-n", "fleet", "get", "nodesnapshots", "--no-headers")
		return strings.Count(strings.TrimSpace(out), "\n") + 1
	}
	if n := snapshots(); n != 2 {
		t.Fatalf("%d snapshots under a cap of 2", n)
	}
	msg := hubK.must("", "-n", "fleet", "get", "managedcluster", "capped", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}`)
	if !strings.HasPrefix(msg, "TooManyNodes: ") || !strings.Contains(msg, "2 are mirrored and kept up to date, 1 are not") {
		t.Errorf("Ready = %q", msg)
	}
	var mirrored string
	for i := range 3 {
		if _, err := hubK.run("", "-n", "fleet", "get", "nodesnapshot", fmt.Sprintf("capped.node-%d", i)); err == nil {
			mirrored = fmt.Sprintf("node-%d", i)
			break
		}
	}
	if err := member.CoreV1().Nodes().Delete(ctx, mirrored, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := hubK.run("", "-n", "fleet", "wait", "managedcluster/capped", "--for=condition=Ready", "--timeout=60s"); err != nil {
		status, _ := hubK.run("", "-n", "fleet", "get", "managedcluster", "capped", "-o", "jsonpath={.status}")
		snaps, _ := hubK.run("", "-n", "fleet", "get", "nodesnapshots")
		t.Fatalf("not Ready after %s went: %s\nstatus: %s\n%s", mirrored, out, status, snaps)
	}
	if n := snapshots(); n != 2 {
		t.Errorf("%d snapshots after a mirrored node went, want the third in its place", n)
	}
}
