package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// TestReleaseManifestInstallsAndRuns server-side applies the release
// manifest (config/default, rendered as make build-installer renders it) to
// an empty hub with the project's kubectl, then runs the operator and the
// sidecar exactly as its Deployments say: their args and env, their
// ServiceAccounts' identities, their readiness probes. Only the in-cluster
// config is stood in for by a kubeconfig holding the ServiceAccount's token.
func TestReleaseManifestInstallsAndRuns(t *testing.T) {
	manifest := renderRelease(t)
	checkInstall(t, manifest, "nodemirror-system", false)
}

// TestHelmChartInstallsAndRuns does the same with the chart as helm
// template renders it into another namespace.
func TestHelmChartInstallsAndRuns(t *testing.T) {
	manifest := helmTemplate(t, "nodemirror-hub", "--include-crds")
	checkInstall(t, manifest, "nodemirror-hub", true)
}

func checkInstall(t *testing.T, manifest []byte, namespace string, createNamespace bool) {
	for _, port := range []string{"8081", "8443", "8090", "8091"} {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatalf("the Deployments' ports must be free on this machine: %v", err)
		}
		l.Close()
	}
	hub := framework.NewMember() // a bare API server: the manifest brings the CRDs
	cfgs, err := framework.StartAll(hub)
	t.Cleanup(func() { framework.StopAll(hub) })
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	admin := writeAdminKubeconfig(t, hub, dir)
	k := kubectl{t: t, kubeconfig: admin}
	if createNamespace {
		k.must(nil, "create", "namespace", namespace)
	}
	path := filepath.Join(dir, "install.yaml")
	if err := os.WriteFile(path, manifest, 0o600); err != nil {
		t.Fatal(err)
	}
	out := k.must(nil, "apply", "--server-side", "--field-manager=install-test", "-f", path)
	t.Logf("kubectl apply --server-side\n%s", out)
	k.must(nil, "wait", "--for=condition=Established", "--timeout=60s", "crd/managedclusters.fleet.nodemirror.io", "crd/nodesnapshots.fleet.nodemirror.io")
	// Applying again changes nothing: the manifest is what the hub keeps.
	if again := k.must(nil, "apply", "--server-side", "--field-manager=install-test", "-f", path); strings.Contains(again, "configured") && !strings.Contains(again, "serverside-applied") {
		t.Errorf("second apply changed objects:\n%s", again)
	}

	cs := kubernetes.NewForConfigOrDie(cfgs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	deployments := map[string]*appsv1.Deployment{}
	for _, obj := range decodeAll(t, manifest) {
		if obj.GetKind() != "Deployment" {
			continue
		}
		d := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, d); err != nil {
			t.Fatal(err)
		}
		if d.Namespace != namespace {
			t.Errorf("Deployment %s in namespace %q, want %q", d.Name, d.Namespace, namespace)
		}
		deployments[d.Name] = d
	}
	for _, name := range []string{"nodemirror-operator", "nodemirror-sidecar"} {
		d := deployments[name]
		if d == nil {
			t.Fatalf("the manifest has no Deployment %s", name)
		}
		if d.Spec.Template.Spec.ServiceAccountName == "" || d.Spec.Template.Spec.SecurityContext == nil || !*d.Spec.Template.Spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: want its own ServiceAccount and runAsNonRoot", name)
		}
		if len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
			t.Errorf("%s: no topology spread", name)
		}
	}
	if a, b := deployments["nodemirror-operator"].Spec.Template.Spec.ServiceAccountName, deployments["nodemirror-sidecar"].Spec.Template.Spec.ServiceAccountName; a == b {
		t.Errorf("the operator and the sidecar share ServiceAccount %s", a)
	}
	checkSidecarRights(ctx, t, cs, namespace, deployments["nodemirror-sidecar"].Spec.Template.Spec.ServiceAccountName)

	operator := runDeployment(ctx, t, cs, cfgs[0], dir, deployments["nodemirror-operator"], "operator")
	sidecar := runDeployment(ctx, t, cs, cfgs[0], dir, deployments["nodemirror-sidecar"], "sidecar")

	// The operator, as its ServiceAccount, holds the leader Lease in its
	// namespace, reads Secrets and writes ManagedCluster status.
	framework.WaitFor(t, 30*time.Second, "the operator's leader Lease", func() bool {
		_, err := cs.CoordinationV1().Leases(namespace).Get(ctx, "nodemirror-operator.fleet.nodemirror.io", metav1.GetOptions{})
		return err == nil
	})
	k.must(nil, "create", "namespace", "fleet")
	k.must([]byte(`apiVersion: fleet.nodemirror.io/v1alpha1
kind: ManagedCluster
metadata: {name: east, namespace: fleet}
spec:
  kubeconfigSecretRef: {name: east-kubeconfig}
`), "apply", "-f", "-")
	framework.WaitFor(t, 30*time.Second, "the operator's status on a ManagedCluster", func() bool {
		out, _ := k.run(nil, "-n", "fleet", "get", "mc", "east", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}")
		return out == fleetv1.ReasonSecretNotFound
	})

	// Metrics: HTTPS, for identities bound to the metrics-reader role.
	k.must(nil, "-n", "fleet", "create", "serviceaccount", "scraper")
	k.must(nil, "create", "clusterrolebinding", "scraper", "--clusterrole=nodemirror-metrics-reader", "--serviceaccount=fleet:scraper")
	scraper := strings.TrimSpace(k.must(nil, "-n", "fleet", "create", "token", "scraper"))
	framework.WaitFor(t, 20*time.Second, "metrics for the metrics reader", func() bool {
		code, body := framework.ScrapeOperator(t, "127.0.0.1:8443", scraper)
		return code == http.StatusOK && strings.Contains(body, `nodemirror_cluster_condition{name="east",namespace="fleet",status="False",type="Ready"} 1`)
	})
	if code, _ := framework.ScrapeOperator(t, "127.0.0.1:8443", ""); code != http.StatusUnauthorized {
		t.Errorf("metrics without a token: %d, want 401", code)
	}

	// The sidecar, as its ServiceAccount, serves a viewer what the hub's
	// RBAC lets the viewer list.
	viewer, err := framework.ViewerToken(ctx, cs, "fleet", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:8090/api/v1/namespaces/fleet/managedclusters", nil)
	req.Header.Set("Authorization", "Bearer "+viewer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(body.String(), `"name":"east"`) {
		t.Errorf("sidecar list for a viewer: %d %.300s", resp.StatusCode, body.String())
	}
	if resp, err := http.Get("http://127.0.0.1:8091/metrics"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("sidecar metrics port: %v %v", err, resp)
	} else {
		resp.Body.Close()
	}
	sidecar.stop()
	operator.stop()
	// Whatever the binaries did, their ServiceAccounts were allowed to.
	for _, p := range []*process{operator, sidecar} {
		if strings.Contains(strings.ToLower(p.logs.String()), "forbidden") {
			t.Errorf("%s was refused something by the hub's RBAC:\n%s", p.name, p.logs.String())
		}
	}
}

// checkSidecarRights asks the hub what the sidecar's ServiceAccount may
// do: list and watch the three kinds, review tokens and access, and
// nothing else that matters (no Secrets, no writes: NodeOperations are
// created with the users' own tokens).
func checkSidecarRights(ctx context.Context, t *testing.T, cs kubernetes.Interface, namespace, sa string) {
	user := fmt.Sprintf("system:serviceaccount:%s:%s", namespace, sa)
	for _, c := range []struct {
		group, resource, verb string
		want                  bool
	}{
		{fleetv1.GroupVersion.Group, "nodesnapshots", "watch", true},
		{fleetv1.GroupVersion.Group, "managedclusters", "list", true},
		{"authentication.k8s.io", "tokenreviews", "create", true},
		{"authorization.k8s.io", "subjectaccessreviews", "create", true},
		{"", "secrets", "get", false},
		{"", "secrets", "list", false},
		{fleetv1.GroupVersion.Group, "nodesnapshots", "update", false},
		{fleetv1.GroupVersion.Group, "managedclusters", "create", false},
		{fleetv1.GroupVersion.Group, "nodeoperations", "watch", true},
		{fleetv1.GroupVersion.Group, "nodeoperations", "list", true},
		{fleetv1.GroupVersion.Group, "nodeoperations", "create", false},
		{fleetv1.GroupVersion.Group, "nodeoperations", "patch", false},
		{fleetv1.GroupVersion.Group, "nodeoperations/status", "update", false},
	} {
		if got := framework.Can(ctx, t, cs, user, c.verb, c.group, c.resource); got != c.want {
			t.Errorf("sidecar ServiceAccount may %s %s: %v, want %v", c.verb, c.resource, got, c.want)
		}
	}
}

// process is a binary run as a Deployment's container would run it.
type process struct {
	name string
	cmd  *exec.Cmd
	logs bytes.Buffer
	done chan struct{}
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// runDeployment builds the binary of the Deployment's one container and
// starts it with the container's args and env (fieldRefs resolved as the
// kubelet would) under the identity of the pod's ServiceAccount, then
// waits until the container's readiness probe answers 200.
func runDeployment(ctx context.Context, t *testing.T, cs kubernetes.Interface, hub *rest.Config, dir string, d *appsv1.Deployment, cmdName string) *process {
	t.Helper()
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want one container, got %d", d.Name, len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) > 0 {
		t.Fatalf("%s: the image's entrypoint runs the binary; command %v would replace it", d.Name, c.Command)
	}
	bin := buildBinary(t, dir, cmdName)
	token, err := framework.Token(ctx, cs, d.Namespace, pod.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := writeTokenKubeconfig(t, hub, dir, pod.ServiceAccountName, token)

	env := []string{"KUBECONFIG=" + kubeconfig, "HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env = append(env, e.Name+"="+d.Namespace)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env = append(env, e.Name+"="+d.Name+"-test")
		default:
			t.Fatalf("%s: env %s comes from a source this test does not resolve", d.Name, e.Name)
		}
	}
	p := &process{name: d.Name, cmd: exec.Command(bin, c.Args...), done: make(chan struct{})}
	p.cmd.Env, p.cmd.Dir = env, dir
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	t.Logf("%s: %s %s", d.Name, filepath.Base(bin), strings.Join(c.Args, " "))
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", d.Name, p.logs.String())
		}
	})

	probe := c.ReadinessProbe
	if probe == nil || probe.HTTPGet == nil {
		t.Fatalf("%s: no HTTP readiness probe", d.Name)
	}
	port := probe.HTTPGet.Port.String()
	for _, cp := range c.Ports {
		if cp.Name == port {
			port = fmt.Sprint(cp.ContainerPort)
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%s%s", port, probe.HTTPGet.Path)
	framework.WaitFor(t, 60*time.Second, d.Name+" ready at "+url, func() bool {
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", d.Name, p.logs.String())
		default:
		}
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

var built = map[string]string{}

func buildBinary(t *testing.T, dir, name string) string {
	t.Helper()
	if bin, ok := built[name]; ok {
		return bin
	}
	bin := filepath.Join(os.TempDir(), fmt.Sprintf("nodemirror-install-test-%d-%s", os.Getpid(), name))
	build := exec.Command("go", "build", "-o", bin, "./cmd/"+name)
	build.Dir = framework.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	built[name] = bin
	return bin
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, bin := range built {
		os.Remove(bin)
	}
	os.Exit(code)
}

func writeAdminKubeconfig(t *testing.T, env *envtest.Environment, dir string) string {
	raw, err := framework.Kubeconfig(env, "install-admin", []string{"system:masters"}, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeTokenKubeconfig stands in for the in-cluster config: the API
// server, its CA and a ServiceAccount token, as a pod gets them mounted.
func writeTokenKubeconfig(t *testing.T, hub *rest.Config, dir, name, token string) string {
	raw, err := framework.TokenKubeconfig(hub.Host, hub.CAData, token)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectl runs the project's kubectl against one kubeconfig.
type kubectl struct {
	t          *testing.T
	kubeconfig string
}

func (k kubectl) run(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

func (k kubectl) must(stdin []byte, args ...string) string {
	k.t.Helper()
	out, err := k.run(stdin, args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

// decodeAll splits a multi-document YAML manifest into objects.
func decodeAll(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("manifest: %v", err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}
