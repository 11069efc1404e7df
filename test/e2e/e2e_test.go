// Package e2e runs the operator binary, as deployed, against a real hub and
// member, and drives it with kubectl the way a platform engineer would.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/nodemirror/nodemirror/controllers/managedcluster"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/test/framework"
)

type kubectl struct {
	t          *testing.T
	bin        string
	kubeconfig string
}

func (k kubectl) run(stdin string, args ...string) (string, error) {
	cmd := exec.Command(k.bin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (k kubectl) must(stdin string, args ...string) string {
	k.t.Helper()
	out, err := k.run(stdin, args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// registerCluster does what a user does to add a member: namespace fleet,
// a kubeconfig Secret and a ManagedCluster, then waits for it to be Ready.
func (k kubectl) registerCluster(name, memberKubeconfig string) {
	k.t.Helper()
	k.registerClusterNoWait(name, memberKubeconfig)
	k.must("", "-n", "fleet", "wait", "managedcluster/"+name, "--for=condition=Ready", "--timeout=60s")
}

// registerClusterNoWait registers a member without waiting for it.
func (k kubectl) registerClusterNoWait(name, memberKubeconfig string) {
	k.t.Helper()
	k.must("", "create", "namespace", "fleet")
	k.must("", "-n", "fleet", "create", "secret", "generic", name+"-kubeconfig", "--from-file=kubeconfig="+memberKubeconfig)
	k.must("", "-n", "fleet", "label", "secret", name+"-kubeconfig", "fleet.nodemirror.io/kubeconfig=true")
	k.must(fmt.Sprintf(`apiVersion: fleet.nodemirror.io/v1alpha1
kind: ManagedCluster
metadata: {name: %s, namespace: fleet}
spec:
  kubeconfigSecretRef: {name: %s-kubeconfig}
`, name, name), "apply", "-f", "-")
}

// runOperator runs the operator in-process against hub until the test ends.
func runOperator(t *testing.T, ctx context.Context, hub *rest.Config, tune ...func(*managedcluster.Reconciler)) {
	t.Helper()
	stop, err := framework.StartOperator(ctx, hub, tune...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
}

func writeKubeconfig(t *testing.T, env *envtest.Environment, dir, name string) string {
	raw, err := framework.Kubeconfig(env, name+"-admin", []string{"system:masters"}, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOperatorBinaryWithKubectl(t *testing.T) {
	cp := framework.StartControlPlanes(t, 1)
	hubEnv, memberEnv, cfgs := cp.Hub, cp.Members[0], []*rest.Config{cp.HubConfig, cp.MemberConfigs[0]}
	dir := t.TempDir()
	hubKubeconfig := writeKubeconfig(t, hubEnv, dir, "hub")
	memberKubeconfig := writeKubeconfig(t, memberEnv, dir, "member")
	k := kubectl{t: t, bin: filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), kubeconfig: hubKubeconfig}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	member := kubernetes.NewForConfigOrDie(cfgs[1])
	for i, role := range []string{"control-plane", "worker", "worker"} {
		n := framework.NewNode(fmt.Sprintf("node-%d", i), map[string]string{"node-role.kubernetes.io/" + role: ""})
		n.Status.Addresses[0].Address = fmt.Sprintf("10.0.0.%d", i+10)
		if _, err := framework.CreateNode(ctx, member, n); err != nil {
			t.Fatal(err)
		}
	}

	metricsAddr, probeAddr := framework.FreePort(t), framework.FreePort(t)
	operator := startBinary(t, dir, "operator", "http://"+probeAddr+"/readyz", "--kubeconfig", hubKubeconfig, "--leader-elect", "--leader-election-namespace", "default",
		"--metrics-bind-address", metricsAddr, "--health-probe-bind-address", probeAddr, "--member-probe-interval", "500ms",
		"--member-allow-cidrs", "127.0.0.1/32")

	k.registerCluster("edge", memberKubeconfig)

	out := k.must("", "get", "nodesnapshots", "-A")
	t.Logf("kubectl get nodesnapshots -A\n%s", out)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NAMESPACE NAME CLUSTER NODE STATUS ROLES VERSION AGE" {
		t.Errorf("header = %q", lines[0])
	}
	if len(lines) != 4 {
		t.Fatalf("want 3 snapshots, got:\n%s", out)
	}
	if f := strings.Fields(lines[1]); f[1] != "edge.node-0" || f[2] != "edge" || f[3] != "node-0" || f[4] != "Ready" || f[5] != "control-plane" || f[6] != "v1.37.2" {
		t.Errorf("row = %q", lines[1])
	}

	wide := k.must("", "get", "nodesnapshots", "-n", "fleet", "-o", "wide")
	t.Logf("kubectl get nodesnapshots -o wide\n%s", wide)
	for _, col := range []string{"INTERNAL-IP", "OS-IMAGE", "KERNEL", "RUNTIME", "CPU", "MEMORY"} {
		if !strings.Contains(strings.Split(wide, "\n")[0], col) {
			t.Errorf("wide output lacks column %s", col)
		}
	}
	if !strings.Contains(wide, "10.0.0.11") || !strings.Contains(wide, "containerd://2.1.4") {
		t.Errorf("wide output lacks node details:\n%s", wide)
	}

	mcs := k.must("", "get", "managedclusters", "-A")
	t.Logf("kubectl get managedclusters -A\n%s", mcs)
	if got := strings.Join(strings.Fields(strings.Split(mcs, "\n")[0]), " "); got != "NAMESPACE NAME READY CONNECTED NODES READY-NODES VERSION AGE" {
		t.Errorf("header = %q", got)
	}
	if f := strings.Fields(strings.Split(mcs, "\n")[1]); strings.Join(f[:7], " ") != "fleet edge True True 3 3 v1.37.2" {
		t.Errorf("row = %q", f)
	}
	if out := k.must("", "get", "nodemirror", "-A"); !strings.Contains(out, "managedcluster.fleet.nodemirror.io/edge") || !strings.Contains(out, "nodesnapshot.fleet.nodemirror.io/edge.node-2") {
		t.Errorf("category nodemirror does not list both kinds:\n%s", out)
	}
	if out := k.must("", "get", "mc", "-n", "fleet", "edge", "-o", "wide"); !strings.Contains(out, "MESSAGE") || !strings.Contains(out, "mirroring 3 nodes") {
		t.Errorf("wide ManagedCluster lacks MESSAGE:\n%s", out)
	}

	// A cordon on the member shows in the STATUS column.
	k2 := kubectl{t: t, bin: k.bin, kubeconfig: memberKubeconfig}
	k2.must("", "cordon", "node-1")
	framework.WaitFor(t, 10*time.Second, "node-1 shown cordoned", func() bool {
		out, _ := k.run("", "get", "nodesnapshots", "-n", "fleet", "edge.node-1", "--no-headers")
		return strings.Contains(out, "Ready,SchedulingDisabled")
	})

	// A NodeOperation applied with kubectl cordons a node from the hub;
	// kubectl shows its progress and the snapshot the result.
	k.must(`apiVersion: fleet.nodemirror.io/v1alpha1
kind: NodeOperation
metadata: {name: cordon-node-0, namespace: fleet}
spec:
  clusters: {names: [edge]}
  nodes: {names: [node-0]}
  action: cordon
`, "apply", "-f", "-")
	k.must("", "-n", "fleet", "wait", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=60s", "nodeoperation/cordon-node-0")
	ops := k.must("", "get", "nodeoperations", "-n", "fleet")
	t.Logf("kubectl get nodeoperations -n fleet\n%s", ops)
	if got := strings.Join(strings.Fields(strings.Split(ops, "\n")[0]), " "); got != "NAME ACTION TARGETS SUCCEEDED FAILED PHASE AGE" {
		t.Errorf("header = %q", got)
	}
	if row := strings.Split(ops, "\n")[1]; !strings.Contains(row, "cordon-node-0") || !strings.Contains(row, "Succeeded") || !strings.Contains(row, "cordon") {
		t.Errorf("row = %q", row)
	}
	framework.WaitFor(t, 10*time.Second, "node-0 shown cordoned", func() bool {
		out, _ := k.run("", "get", "nodesnapshots", "-n", "fleet", "edge.node-0", "--no-headers")
		return strings.Contains(out, "Ready,SchedulingDisabled")
	})
	k2.must("", "uncordon", "node-0")

	// Node labels select snapshots with -l, spec fields with
	// --field-selector, by the short name.
	if out := k.must("", "get", "nsnap", "-A", "-l", "node-role.kubernetes.io/worker", "--no-headers", "-o", "name"); strings.Join(strings.Fields(out), " ") != "nodesnapshot.fleet.nodemirror.io/edge.node-1 nodesnapshot.fleet.nodemirror.io/edge.node-2" {
		t.Errorf("-l node-role.kubernetes.io/worker selected:\n%s", out)
	}
	if out := k.must("", "get", "nsnap", "-A", "--field-selector", "spec.clusterName=edge,spec.nodeName=node-0", "--no-headers", "-o", "name"); strings.TrimSpace(out) != "nodesnapshot.fleet.nodemirror.io/edge.node-0" {
		t.Errorf("--field-selector selected:\n%s", out)
	}
	if out, err := k.run("", "get", "nsnap", "-A", "--field-selector", "status.columns.status=Ready"); err == nil {
		t.Errorf("a field that is not selectable was accepted:\n%s", out)
	}
	// Labels and annotations others add stay through the operator's
	// writes; a label the node loses leaves the snapshot.
	k.must("", "-n", "fleet", "label", "nsnap", "edge.node-2", "team=payments")
	k.must("", "-n", "fleet", "annotate", "nsnap", "edge.node-2", "example.com/owner=alice")
	k2.must("", "label", "node", "node-2", "rack=r1")
	framework.WaitFor(t, 10*time.Second, "rack label mirrored", func() bool {
		out, _ := k.run("", "get", "nsnap", "-n", "fleet", "-l", "rack=r1", "-o", "name")
		return strings.Contains(out, "edge.node-2")
	})
	k2.must("", "label", "node", "node-2", "rack-", "node-role.kubernetes.io/worker-")
	framework.WaitFor(t, 10*time.Second, "removed labels gone from the snapshot", func() bool {
		out, _ := k.run("", "get", "nsnap", "-n", "fleet", "edge.node-2", "-o", "jsonpath={.metadata.labels}")
		return !strings.Contains(out, "rack") && !strings.Contains(out, "node-role.kubernetes.io/worker")
	})
	meta := k.must("", "get", "nsnap", "-n", "fleet", "edge.node-2", "-o", "jsonpath={.metadata.labels.team} {.metadata.annotations.example\\.com/owner} {.metadata.labels.fleet\\.nodemirror\\.io/cluster}")
	if strings.TrimSpace(meta) != "payments alice edge" {
		t.Errorf("after the operator's writes: team label, owner annotation, cluster label = %q", meta)
	}
	k2.must("", "label", "node", "node-2", "node-role.kubernetes.io/worker=")

	// Metrics are HTTPS, for identities the hub lets get /metrics only.
	k.must("", "apply", "-f", filepath.Join(framework.RepoRoot(), "config", "rbac", "metrics_reader_role.yaml"))
	k.must("", "-n", "default", "create", "serviceaccount", "scraper")
	k.must("", "create", "clusterrolebinding", "scraper", "--clusterrole=nodemirror-metrics-reader", "--serviceaccount=default:scraper")
	scraper := strings.TrimSpace(k.must("", "-n", "default", "create", "token", "scraper"))
	k.must("", "-n", "default", "create", "serviceaccount", "nosy")
	nosy := strings.TrimSpace(k.must("", "-n", "default", "create", "token", "nosy"))
	if code, _ := framework.ScrapeOperator(t, metricsAddr, ""); code != http.StatusUnauthorized {
		t.Errorf("metrics without a token: %d, want 401", code)
	}
	if code, _ := framework.ScrapeOperator(t, metricsAddr, nosy); code != http.StatusForbidden {
		t.Errorf("metrics for an identity without the metrics-reader role: %d, want 403", code)
	}
	code, body := framework.ScrapeOperator(t, metricsAddr, scraper)
	if code != http.StatusOK {
		t.Errorf("metrics for the scraper: %d", code)
	}
	for _, m := range []string{
		`nodemirror_nodes_mirrored{name="edge",namespace="fleet"} 3`,
		`nodemirror_hub_writes_total{name="edge",namespace="fleet",operation="create"} 3`,
		`nodemirror_cluster_condition{name="edge",namespace="fleet",status="True",type="Ready"} 1`,
		`nodemirror_cluster_condition{name="edge",namespace="fleet",status="False",type="Ready"} 0`,
		"nodemirror_propagation_lag_seconds_bucket",
	} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q", m)
		}
	}

	testSidecarBinary(t, k, k2, hubKubeconfig, dir)

	// Deleting through kubectl waits for the finalizer: snapshots first.
	k.must("", "-n", "fleet", "delete", "managedcluster", "edge", "--timeout=60s")
	if out := k.must("", "get", "nodesnapshots", "-A", "--no-headers"); strings.TrimSpace(out) != "" && !strings.Contains(out, "No resources") {
		t.Errorf("snapshots left after delete:\n%s", out)
	}

	operator.stop()
}

// testSidecarBinary runs the sidecar binary against the hub and reads the
// mirrored nodes through it as a ServiceAccount bound to the shipped
// viewer role, over HTTP and over a websocket.
func testSidecarBinary(t *testing.T, hub, member kubectl, hubKubeconfig, dir string) {
	hub.must("", "apply", "-f", filepath.Join(framework.RepoRoot(), "config", "rbac", "user_roles.yaml"))
	hub.must("", "-n", "fleet", "create", "serviceaccount", "viewer")
	hub.must("", "-n", "fleet", "create", "rolebinding", "viewer", "--clusterrole=nodemirror-viewer", "--serviceaccount=fleet:viewer")
	token := strings.TrimSpace(hub.must("", "-n", "fleet", "create", "token", "viewer"))

	addr := framework.FreePort(t)
	sidecarMetrics := framework.FreePort(t)
	sidecar := startBinary(t, dir, "sidecar", "http://"+addr+"/readyz", "--kubeconfig", hubKubeconfig, "--bind-address", addr, "--metrics-bind-address", sidecarMetrics)
	if resp, err := http.Get("http://" + sidecarMetrics + "/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("sidecar metrics on their own port: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}

	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := get("/api/v1/namespaces/fleet/nodesnapshots"); code != http.StatusOK || strings.Count(body, `"kind":"NodeSnapshot"`) != 3 {
		t.Errorf("sidecar list: %d %.300s", code, body)
	}
	if code, _ := get("/api/v1/namespaces/default/nodesnapshots"); code != http.StatusForbidden {
		t.Errorf("sidecar list of another namespace: %d, want 403", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/api/v1/watch", &websocket.DialOptions{Subprotocols: []string{
		protocol.BearerProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token)), protocol.Subprotocol,
	}})
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"n","namespace":"fleet"}`)); err != nil {
		t.Fatal(err)
	}
	read := func() protocol.Envelope {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("websocket read: %v", err)
		}
		var env protocol.Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			t.Fatal(err)
		}
		return env
	}
	for i := 0; i < 3; i++ {
		if env := read(); env.Event.Type != protocol.Added {
			t.Fatalf("initial event %d: %s", i, env.Event.Type)
		}
	}
	if env := read(); env.Event.Type != protocol.Bookmark {
		t.Fatalf("want BOOKMARK, got %s", env.Event.Type)
	}
	member.must("", "label", "node", "node-2", "rack=r7")
	for {
		env := read()
		if env.Event.Type == protocol.Modified && strings.Contains(string(env.Event.Object), `"rack":"r7"`) {
			break
		}
	}

	sidecar.stop()
}

// process is one of the project's binaries, built and run for a test.
type process struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	logs   bytes.Buffer
	exited chan error
}

// startBinary builds ./cmd/<name> into dir, starts it with args, and waits
// until readyURL answers 200. Its log is shown if the test fails.
func startBinary(t *testing.T, dir, name, readyURL string, args ...string) *process {
	t.Helper()
	bin := filepath.Join(dir, "nodemirror-"+name)
	build := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	build.Dir = framework.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	p := &process{t: t, name: name, cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logs.String())
		}
	})
	framework.WaitFor(t, 30*time.Second, name+" ready at "+readyURL, func() bool {
		resp, err := http.Get(readyURL)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// stop sends SIGTERM and expects a clean exit within 20 s.
func (p *process) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			p.t.Errorf("%s exited with %v", p.name, err)
		}
	case <-time.After(20 * time.Second):
		p.t.Errorf("%s did not stop within 20s of SIGTERM", p.name)
	}
}
