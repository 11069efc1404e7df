package realcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

const chartNamespace = "nodemirror-hub"

// helm runs the project's Helm (make helm) against the cluster.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "bin", "helm"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+real.AdminKubeconfig, "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// testHelmChart replaces the manifest's installation with the chart in
// another namespace, the release's images pinned by digest as the README
// says, and checks the chart's pods, Lease, metrics and UI the same way.
func testHelmChart(t *testing.T, dyn dynamic.Interface, rel release, manifest string) {
	// What the manifest installed goes first, the member registration
	// with it (its finalizer needs the running operator).
	t.Log(kubectl(t, "nodemirror", "unjoin", "real", "--hub-context", "default", "--member-context", "default", "-n", fleet))
	kubectl(t, "delete", "nodeoperations", "--all", "-n", fleet, "--wait", "--timeout=2m")
	kubectl(t, "delete", "-f", manifest, "--wait", "--timeout=3m")

	args := []string{"install", "nodemirror", filepath.Join(root, "charts", "nodemirror"), "-n", chartNamespace, "--create-namespace", "--wait", "--timeout", "4m"}
	for _, img := range rel.images.Images {
		args = append(args, "--set", "image."+img.Name+".digest="+img.Digest)
	}
	t.Log(helm(t, args...))
	shipped := deployments(t, []byte(helm(t, "get", "manifest", "nodemirror", "-n", chartNamespace)))
	for _, name := range []string{"nodemirror-operator", "nodemirror-sidecar"} {
		d, ok := shipped[name]
		if !ok {
			t.Fatalf("the chart has no Deployment %s", name)
		}
		checkPodsAsShipped(t, chartNamespace, d)
	}
	checkOperatorServes(t, chartNamespace)

	t.Log(kubectl(t, "nodemirror", "join", "real", "--member-context", "default", "--hub-context", "default", "-n", fleet))
	waitFor(t, 2*time.Minute, "the chart's operator to mirror both nodes", func(ctx context.Context) (bool, error) {
		return clusterCondition(ctx, dyn, fleetv1.ConditionReady) == "True" &&
			snapshotStatus(t, "node-0") == "Ready" && snapshotStatus(t, workloadNode) == "Ready", nil
	})
	token := serviceAccountToken(t, fleet, "viewer", "view", fleet)
	ui := openUI(t, serviceAddr(t, chartNamespace, "nodemirror-sidecar"), token)
	ui.waitJS("both nodes Ready in the chart's UI", ui.rowText("node-0")+`.includes("Ready") && `+ui.rowText(workloadNode)+`.includes("Ready")`, 30*time.Second)
	ui.screenshot(t, "ui-real-helm.png")
}
