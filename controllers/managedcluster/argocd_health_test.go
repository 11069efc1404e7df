package managedcluster_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/argocdlua"
	"github.com/nodemirror/nodemirror/test/framework"
)

// updateArgoCDTestdata names the variable that makes the spec below write
// the objects it reads from the hub into the Argo CD health check's testdata.
const updateArgoCDTestdata = "NODEMIRROR_UPDATE_ARGOCD_TESTDATA"

// generatedHeader starts every file the spec writes.
const generatedHeader = "# Read from a hub by controllers/managedcluster/argocd_health_test.go;\n# regenerate with " + updateArgoCDTestdata + "=1 (do not edit).\n"

var managedClusterGK = fleetv1.GroupVersion.WithKind("ManagedCluster").GroupKind()

// argocdHealthCase is one object read from the hub and the health the
// Argo CD health check must give it.
type argocdHealthCase struct {
	file   string // under testdata/
	obj    *unstructured.Unstructured
	health argocdlua.HealthStatus
}

// argocdCustomizations is the check under test, in its Argo CD layout.
type argocdCustomizations struct {
	dir    string // resource_customizations/fleet.nodemirror.io/ManagedCluster
	health string
	cases  []argocdHealthCase
	files  map[string]*unstructured.Unstructured // more files to write, by path under dir
}

func loadArgoCDCustomizations() *argocdCustomizations {
	root := filepath.Join(framework.RepoRoot(), "argocd", "resource_customizations")
	script, err := argocdlua.LoadHealth(os.DirFS(root), managedClusterGK)
	Expect(err).NotTo(HaveOccurred())
	return &argocdCustomizations{
		dir:    filepath.Join(root, argocdlua.Dir(managedClusterGK)),
		health: script,
		files:  map[string]*unstructured.Unstructured{},
	}
}

// check runs the health check on obj, as an argocd-cm script and as a
// built-in one, and kstatus, and records the case.
func (a *argocdCustomizations) check(file string, obj *unstructured.Unstructured, want argocdlua.HealthStatus, kstatus status.Status) {
	GinkgoHelper()
	for _, vm := range []argocdlua.VM{{}, {UseOpenLibs: true}} {
		got, err := vm.RunHealth(obj, a.health)
		Expect(err).NotTo(HaveOccurred())
		Expect(*got).To(Equal(want), "health of %s (open libraries: %v); status %v", file, vm.UseOpenLibs, obj.Object["status"])
	}
	Expect(kstatusOf(obj)).To(Equal(kstatus), "kstatus of %s", file)
	a.cases = append(a.cases, argocdHealthCase{file: file, obj: obj.DeepCopy(), health: want})
}

// act runs an action the way Argo CD's API server does and returns the
// merge patch it would send to the hub.
func (a *argocdCustomizations) act(live *unstructured.Unstructured, action string) (*unstructured.Unstructured, []byte) {
	GinkgoHelper()
	script, err := argocdlua.LoadAction(os.DirFS(filepath.Dir(filepath.Dir(a.dir))), managedClusterGK, action)
	Expect(err).NotTo(HaveOccurred())
	out, err := argocdlua.VM{}.RunAction(live, script, nil)
	Expect(err).NotTo(HaveOccurred())
	Expect(out).To(HaveLen(1))
	Expect(out[0].Operation).To(Equal(argocdlua.Patch))
	patch, err := client.MergeFrom(live).Data(out[0].Object)
	Expect(err).NotTo(HaveOccurred())
	return out[0].Object, patch
}

// write stores the cases, health_test.yaml and the other files.
func (a *argocdCustomizations) write() {
	type test struct {
		HealthStatus argocdlua.HealthStatus `json:"healthStatus"`
		InputPath    string                 `json:"inputPath"`
	}
	var tests []test
	for _, c := range a.cases {
		path := "testdata/" + c.file
		a.files[path] = c.obj
		tests = append(tests, test{HealthStatus: c.health, InputPath: path})
	}
	for path, obj := range a.files {
		writeYAML(filepath.Join(a.dir, path), stable(obj))
	}
	writeYAML(filepath.Join(a.dir, "health_test.yaml"), map[string]any{"tests": tests})
}

// compareWithCommitted fails when the committed health_test.yaml does not
// list what this run saw: the same files, the same health statuses.
// Messages may differ (they can name a port that changes every run).
func (a *argocdCustomizations) compareWithCommitted() {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(a.dir, "health_test.yaml"))
	Expect(err).NotTo(HaveOccurred())
	var committed struct {
		Tests []struct {
			HealthStatus argocdlua.HealthStatus `json:"healthStatus"`
			InputPath    string                 `json:"inputPath"`
		} `json:"tests"`
	}
	Expect(yaml.Unmarshal(raw, &committed)).To(Succeed())
	var want, got []string
	for _, t := range committed.Tests {
		want = append(want, t.InputPath+" "+t.HealthStatus.Status)
	}
	for _, c := range a.cases {
		got = append(got, "testdata/"+c.file+" "+c.health.Status)
	}
	Expect(got).To(Equal(want), "health_test.yaml is out of date: run this spec with %s=1", updateArgoCDTestdata)
}

// stable is obj without the metadata that changes every time it is
// created; status is kept exactly as the hub served it.
func stable(obj *unstructured.Unstructured) map[string]any {
	o := obj.DeepCopy()
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "managedFields"} {
		unstructured.RemoveNestedField(o.Object, "metadata", f)
	}
	return o.Object
}

func writeYAML(path string, v any) {
	GinkgoHelper()
	b, err := yaml.Marshal(v)
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(filepath.Dir(path), 0o755)).To(Succeed())
	Expect(os.WriteFile(path, append([]byte(generatedHeader), b...), 0o644)).To(Succeed())
}

// namedFixture is a fixture in a namespace of a fixed name, so that the
// objects written to testdata are the same from one run to the next.
func namedFixture(name string) *fixture {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := hub.Create(ctx, ns); !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
	return &fixture{ns: name, label: name}
}

// createUnstructured creates the cluster f.cluster would and returns the
// hub's answer as it came, without a typed round trip (which would drop
// the defaulted status {observedGeneration: 0}).
func (f *fixture) createUnstructured(name string) *unstructured.Unstructured {
	GinkgoHelper()
	mc := &fleetv1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: fleetv1.ManagedClusterSpec{
			KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: name + "-kubeconfig"},
			NodeSelector:        &metav1.LabelSelector{MatchLabels: map[string]string{specLabel: f.label}},
		},
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(mc)
	Expect(err).NotTo(HaveOccurred())
	u := &unstructured.Unstructured{Object: raw}
	u.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("ManagedCluster"))
	Expect(hub.Create(ctx, u)).To(Succeed())
	return u
}

func (f *fixture) getUnstructured(name string) *unstructured.Unstructured {
	GinkgoHelper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("ManagedCluster"))
	Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, u)).To(Succeed())
	return u
}

// capture waits until the cluster, as the hub serves it, describes its
// current generation and has conditions matching want ("Type=Status/Reason"
// each), and returns that very object.
func (f *fixture) capture(name string, want ...string) *unstructured.Unstructured {
	GinkgoHelper()
	var got *unstructured.Unstructured
	Eventually(func(g Gomega) {
		u := f.getUnstructured(name)
		observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
		g.Expect(observed).To(Equal(u.GetGeneration()), "observedGeneration")
		for _, w := range want {
			t, _, _ := strings.Cut(w, "=")
			c := conditionOf(u, t)
			g.Expect(t + "=" + c.Status + "/" + c.Reason).To(Equal(w))
		}
		got = u
	}).Should(Succeed())
	return got
}

type unstructuredCondition struct{ Status, Reason, Message string }

func conditionOf(u *unstructured.Unstructured, t string) unstructuredCondition {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == t {
			s, _ := m["status"].(string)
			r, _ := m["reason"].(string)
			msg, _ := m["message"].(string)
			return unstructuredCondition{s, r, msg}
		}
	}
	return unstructuredCondition{Status: "<none>"}
}

// withToken replaces the users' credentials of a kubeconfig by a bearer
// token the member does not know.
func withToken(kubeconfig []byte, token string) []byte {
	GinkgoHelper()
	cfg, err := clientcmd.Load(kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	for _, u := range cfg.AuthInfos {
		u.ClientCertificateData, u.ClientKeyData = nil, nil
		u.Token = token
	}
	b, err := clientcmd.Write(*cfg)
	Expect(err).NotTo(HaveOccurred())
	return b
}

func asJSON(u *unstructured.Unstructured) string {
	GinkgoHelper()
	b, err := json.Marshal(u.Object)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

var _ = Describe("The Argo CD health check and actions", func() {
	It("give each state the operator really writes its Argo CD health, and pause and resume through Argo CD's merge patches", func() {
		a := loadArgoCDCustomizations()
		f := namedFixture("fleet")
		f.node(member1, "n1", nil)
		healthy := func(u *unstructured.Unstructured) argocdlua.HealthStatus {
			return argocdlua.HealthStatus{Status: argocdlua.Healthy, Message: conditionOf(u, fleetv1.ConditionReady).Message}
		}

		By("creating a cluster: its status as the create answered, before the operator has seen it")
		f.secret("mirroring-kubeconfig", member1Direct)
		created := f.createUnstructured("mirroring")
		a.check("progressing_unobserved.yaml", created,
			argocdlua.HealthStatus{Status: argocdlua.Progressing, Message: "Waiting for the operator to observe generation 1"}, status.InProgressStatus)

		By("mirroring a real member")
		mirroring := f.capture("mirroring", "Ready=True/Mirroring", "Connected=True/Healthy", "Synced=True/Synced")
		a.check("healthy_mirroring.yaml", mirroring, healthy(mirroring), status.CurrentStatus)

		By("changing the spec: the update's answer describes a generation the operator has not seen")
		changed := mirroring.DeepCopy()
		Expect(unstructured.SetNestedField(changed.Object, "1h0m0s", "spec", "resyncPeriod")).To(Succeed())
		Expect(hub.Update(ctx, changed)).To(Succeed())
		Expect(changed.GetGeneration()).To(Equal(mirroring.GetGeneration() + 1))
		a.check("progressing_newGeneration.yaml", changed,
			argocdlua.HealthStatus{Status: argocdlua.Progressing, Message: "Waiting for the operator to observe generation 2"}, status.InProgressStatus)
		live := f.capture("mirroring", "Ready=True/Mirroring")

		By("pausing with the Argo CD action")
		paused, patch := a.act(live, "pause")
		Expect(string(patch)).To(MatchJSON(`{"spec":{"paused":true}}`))
		want := live.DeepCopy()
		Expect(unstructured.SetNestedField(want.Object, true, "spec", "paused")).To(Succeed())
		Expect(asJSON(paused)).To(MatchJSON(asJSON(want)))
		a.files["actions/testdata/mirroring.yaml"], a.files["actions/testdata/mirroring_pause.yaml"] = live, want
		Expect(hub.Patch(ctx, live.DeepCopy(), client.RawPatch(types.MergePatchType, patch))).To(Succeed())
		suspended := f.capture("mirroring", "Ready=True/Paused", "Connected=Unknown/Paused", "Synced=False/Paused")
		a.check("suspended_paused.yaml", suspended,
			argocdlua.HealthStatus{Status: argocdlua.Suspended, Message: conditionOf(suspended, fleetv1.ConditionReady).Message}, status.CurrentStatus)

		By("resuming with the Argo CD action")
		resumed, patch := a.act(suspended, "resume")
		Expect(string(patch)).To(MatchJSON(`{"spec":{"paused":null}}`))
		want = suspended.DeepCopy()
		unstructured.RemoveNestedField(want.Object, "spec", "paused")
		Expect(asJSON(resumed)).To(MatchJSON(asJSON(want)))
		a.files["actions/testdata/paused.yaml"], a.files["actions/testdata/paused_resume.yaml"] = suspended, want
		Expect(hub.Patch(ctx, suspended.DeepCopy(), client.RawPatch(types.MergePatchType, patch))).To(Succeed())
		again := f.capture("mirroring", "Ready=True/Mirroring")
		Expect(again.Object["spec"]).NotTo(HaveKey("paused"))
		got, err := argocdlua.VM{}.RunHealth(again, a.health)
		Expect(err).NotTo(HaveOccurred())
		Expect(*got).To(Equal(healthy(again)))

		By("connecting to a member that never answers")
		silent, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(silent.Close)
		hanging, err := framework.WithServer(member1Direct, "https://"+silent.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		f.secret("connecting-kubeconfig", hanging)
		f.createUnstructured("connecting")
		connecting := f.capture("connecting", "Connected=Unknown/Connecting", "Ready=False/Connecting", "Reconciling=True/Connecting")
		a.check("progressing_connecting.yaml", connecting,
			argocdlua.HealthStatus{Status: argocdlua.Progressing, Message: conditionOf(connecting, fleetv1.ConditionConnected).Message}, status.InProgressStatus)

		By("losing a member that was mirrored")
		f.secret("lost-kubeconfig", member1ViaProxy)
		f.createUnstructured("lost")
		f.capture("lost", "Ready=True/Mirroring")
		member1Proxy.Down()
		proxyUp := false
		DeferCleanup(func() {
			if !proxyUp {
				Expect(member1Proxy.Up()).To(Succeed())
			}
		})
		lost := f.capture("lost", "Connected=Unknown/Unreachable", "Ready=False/Unreachable", "Reconciling=True/Unreachable", "Synced=True/Synced")
		a.check("degraded_memberLost.yaml", lost,
			argocdlua.HealthStatus{Status: argocdlua.Degraded, Message: conditionOf(lost, fleetv1.ConditionConnected).Message}, status.InProgressStatus)
		Expect(member1Proxy.Up()).To(Succeed())
		proxyUp = true
		back := f.capture("lost", "Ready=True/Mirroring")
		got, err = argocdlua.VM{}.RunHealth(back, a.health)
		Expect(err).NotTo(HaveOccurred())
		Expect(*got).To(Equal(healthy(back)))

		stalled := func(file, cluster string, kubeconfig []byte, connected string) {
			GinkgoHelper()
			if kubeconfig != nil {
				f.secret(cluster+"-kubeconfig", kubeconfig)
			}
			f.createUnstructured(cluster)
			_, reason, _ := strings.Cut(connected, "/")
			u := f.capture(cluster, "Connected="+connected, "Stalled=True/"+reason, "Ready=False/"+reason, "Reconciling=False/"+reason)
			a.check(file, u, argocdlua.HealthStatus{Status: argocdlua.Degraded, Message: conditionOf(u, fleetv1.ConditionStalled).Message}, status.FailedStatus)
		}
		By("refusing credentials the member does not accept")
		stalled("degraded_unauthorized.yaml", "refused", withToken(member1Direct, "not-a-token-of-the-member"), "False/Unauthorized")
		By("being forbidden to list nodes by the member's RBAC")
		stalled("degraded_forbidden.yaml", "forbidden", member1NoRBAC, "False/Forbidden")
		By("naming a Secret that does not exist")
		stalled("degraded_secretNotFound.yaml", "nosecret", nil, "Unknown/SecretNotFound")

		if os.Getenv(updateArgoCDTestdata) != "" {
			a.write()
			GinkgoWriter.Printf("wrote %d Argo CD testdata objects under %s\n", len(a.cases), a.dir)
		}
		a.compareWithCommitted()
	})
})
