package nodeoperation_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// The suite runs one hub and two members, and the operator in-process.
// Each member grants user nodemirror-hub the shipped roles of config/member
// and config/member-operations, and user reader-only the first alone.
var (
	ctx       = context.Background()
	hubCfg    *rest.Config
	hub       client.Client
	hubCS     kubernetes.Interface
	memberEnv []*envtest.Environment
	members   []kubernetes.Interface
	// operatorKubeconfig[i] is member i's nodemirror-hub user.
	operatorKubeconfig [][]byte
	readOnlyKubeconfig []byte
	stopOperator       func() error
)

const specLabel = "suite.nodemirror.io/spec"

func TestMain(m *testing.M) {
	flag.Parse()
	var out io.Writer = io.Discard
	if testing.Verbose() {
		out = os.Stderr
	}
	logger := zap.New(zap.WriteTo(out), zap.UseDevMode(true))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger.WithName("klog"))
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if err := framework.CheckAssets(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	hubEnv := framework.NewHub()
	memberEnv = []*envtest.Environment{framework.NewMember(), framework.NewMember()}
	envs := append([]*envtest.Environment{hubEnv}, memberEnv...)
	defer framework.StopAll(envs...)
	if err := setup(envs); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		return 1
	}
	code := m.Run()
	if err := stopOperator(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return code
}

func setup(envs []*envtest.Environment) error {
	cfgs, err := framework.StartAll(envs...)
	if err != nil {
		return err
	}
	hubCfg = cfgs[0]
	if hub, err = client.New(hubCfg, client.Options{Scheme: framework.Scheme()}); err != nil {
		return err
	}
	hubCS = kubernetes.NewForConfigOrDie(hubCfg)
	reader, err := clusterRole(filepath.Join("config", "member", "clusterrole.yaml"))
	if err != nil {
		return err
	}
	operations, err := clusterRole(filepath.Join("config", "member-operations", "clusterrole.yaml"))
	if err != nil {
		return err
	}
	for i, env := range memberEnv {
		cs := kubernetes.NewForConfigOrDie(cfgs[i+1])
		members = append(members, cs)
		for _, role := range []*rbacv1.ClusterRole{reader, operations} {
			if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role.DeepCopy(), metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		binds := map[string][]string{"nodemirror-hub": {reader.Name, operations.Name}, "reader-only": {reader.Name}}
		for user, roles := range binds {
			for _, role := range roles {
				b := &rbacv1.ClusterRoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: user + "-" + role},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
					Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
				}
				if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
					return err
				}
			}
		}
		kc, err := framework.Kubeconfig(env, "nodemirror-hub", nil, "")
		if err != nil {
			return err
		}
		operatorKubeconfig = append(operatorKubeconfig, kc)
	}
	if readOnlyKubeconfig, err = framework.Kubeconfig(memberEnv[1], "reader-only", nil, ""); err != nil {
		return err
	}
	return startOperator()
}

func startOperator() error {
	cfg := rest.CopyConfig(hubCfg)
	cfg.QPS, cfg.Burst = 200, 400
	var err error
	stopOperator, err = framework.StartOperator(ctx, cfg)
	return err
}

// restartOperator stops the operator and starts a new one, as a rollout would.
func restartOperator(t *testing.T) {
	t.Helper()
	if err := stopOperator(); err != nil {
		t.Fatal(err)
	}
	if err := startOperator(); err != nil {
		t.Fatal(err)
	}
}

func clusterRole(path string) (*rbacv1.ClusterRole, error) {
	raw, err := os.ReadFile(filepath.Join(framework.RepoRoot(), path))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	return role, yaml.UnmarshalStrict(raw, role)
}

// fixture is a test's hub namespace, and the label its member nodes carry
// and its clusters select, so that tests sharing a member stay apart.
type fixture struct {
	t     *testing.T
	ns    string
	label string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "nodeop-"}}
	if err := hub.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ns: ns.Name, label: ns.Name}
}

func (f *fixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

// node creates a ready node of this test on member i and returns its name.
func (f *fixture) node(i int, short string, labels map[string]string) string {
	f.t.Helper()
	l := map[string]string{specLabel: f.label}
	maps.Copy(l, labels)
	n, err := framework.CreateNode(ctx, members[i], framework.NewNode(f.label+"-"+short, l))
	f.must(err)
	return n.Name
}

func (f *fixture) memberNode(i int, name string) *corev1.Node {
	f.t.Helper()
	n, err := members[i].CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	f.must(err)
	return n
}

// cluster registers member i with kubeconfig as ManagedCluster name,
// selecting this test's nodes, and waits until it mirrors nodes of them.
func (f *fixture) cluster(name string, kubeconfig []byte, nodes int, labels map[string]string, mutate ...func(*fleetv1.ManagedCluster)) {
	f.t.Helper()
	f.must(hub.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name + "-kubeconfig", Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}},
		Data:       map[string][]byte{"kubeconfig": kubeconfig},
	}))
	mc := &fleetv1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: labels},
		Spec: fleetv1.ManagedClusterSpec{
			KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: name + "-kubeconfig"},
			NodeSelector:        &metav1.LabelSelector{MatchLabels: map[string]string{specLabel: f.label}},
		},
	}
	for _, m := range mutate {
		m(mc)
	}
	f.must(hub.Create(ctx, mc))
	framework.WaitFor(f.t, 30*time.Second, fmt.Sprintf("%d snapshots of %s", nodes, name), func() bool {
		var list fleetv1.NodeSnapshotList
		f.must(hub.List(ctx, &list, client.InNamespace(f.ns), client.MatchingLabels{fleetv1.ClusterLabel: name}))
		return len(list.Items) == nodes
	})
}

// create creates a NodeOperation with spec and returns its name.
func (f *fixture) create(spec fleetv1.NodeOperationSpec) string {
	f.t.Helper()
	op := &fleetv1.NodeOperation{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: string(spec.Action) + "-"}, Spec: spec}
	f.must(hub.Create(ctx, op))
	return op.Name
}

func (f *fixture) get(name string) *fleetv1.NodeOperation {
	f.t.Helper()
	op := &fleetv1.NodeOperation{}
	f.must(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, op))
	return op
}

// wait waits until operation name has finished, and returns it.
func (f *fixture) wait(name string) *fleetv1.NodeOperation {
	f.t.Helper()
	var op *fleetv1.NodeOperation
	framework.WaitFor(f.t, 60*time.Second, "NodeOperation "+name+" to finish", func() bool {
		op = f.get(name)
		return op.Status.Phase == fleetv1.OperationSucceeded || op.Status.Phase == fleetv1.OperationFailed
	})
	return op
}

// run creates an operation and waits until it has finished.
func (f *fixture) run(spec fleetv1.NodeOperationSpec) *fleetv1.NodeOperation {
	f.t.Helper()
	return f.wait(f.create(spec))
}

func result(op *fleetv1.NodeOperation, cluster, node string) fleetv1.NodeResult {
	for _, r := range op.Status.Results {
		if r.Cluster == cluster && r.Node == node {
			return r
		}
	}
	return fleetv1.NodeResult{Phase: "<none>"}
}

// kstatus computes the operation's health as Flux and Argo CD tools do,
// on the object as the hub serves it.
func (f *fixture) kstatus(name string) status.Status {
	f.t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeOperation"))
	f.must(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, u))
	res, err := status.Compute(u)
	f.must(err)
	return res.Status
}

func condition(op *fleetv1.NodeOperation, t string) string {
	c := meta.FindStatusCondition(op.Status.Conditions, t)
	if c == nil {
		return "<none>"
	}
	return string(c.Status) + "/" + c.Reason
}

func counts(total, succeeded, failed, skipped int32) fleetv1.NodeOperationCounts {
	return fleetv1.NodeOperationCounts{Total: total, Succeeded: succeeded, Failed: failed, Skipped: skipped}
}

func names(clusters ...string) fleetv1.ClusterTargets { return fleetv1.ClusterTargets{Names: clusters} }
