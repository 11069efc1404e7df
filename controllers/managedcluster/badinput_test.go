package managedcluster_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

const execKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: m, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: ["-c", "cat /etc/shadow"], interactiveMode: Never}}}]
contexts: [{name: m, context: {cluster: m, user: u}}]
current-context: m
`

const fileKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: m, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]
contexts: [{name: m, context: {cluster: m, user: u}}]
current-context: m
`

const proxyKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: m, cluster: {server: "https://10.0.0.1:6443", proxy-url: "http://127.0.0.1:3128"}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: m, context: {cluster: m, user: u}}]
current-context: m
`

const brokenCAKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: m, cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: "bm90IGEgY2VydGlmaWNhdGU="}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: m, context: {cluster: m, user: u}}]
current-context: m
`

// badInput describes a broken ManagedCluster and what its status must say.
type badInput struct {
	secret     func() map[string][]byte // nil: no Secret at all
	unmarked   bool                     // the Secret lacks the kubeconfig label
	connected  string                   // "Status/Reason" of Connected
	stalled    bool                     // Stalled=True (else Reconciling=True)
	kstatus    status.Status
	eventMatch string // an Event with this reason must be recorded
}

func kubeconfigData(b []byte) map[string][]byte { return map[string][]byte{"kubeconfig": b} }

var _ = Describe("Bad input", func() {
	DescribeTable("gets its own condition reason and an Event, without crash or hot loop",
		func(in badInput) {
			f := newFixture()
			if in.secret != nil {
				secret := &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "bad-kubeconfig", Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}},
					Data:       in.secret(),
				}
				if in.unmarked {
					secret.Labels = nil
				}
				Expect(hub.Create(ctx, secret)).To(Succeed())
			}
			f.cluster("bad")
			Eventually(f.condition("bad", fleetv1.ConditionConnected)).Should(Equal(in.connected))
			reason := in.connected[len(string(metav1.ConditionUnknown))+1:]
			if in.connected[0] == 'F' {
				reason = in.connected[len("False/"):]
			}
			Expect(f.condition("bad", fleetv1.ConditionReady)()).To(Equal("False/" + reason))
			if in.stalled {
				Expect(f.condition("bad", fleetv1.ConditionStalled)()).To(Equal("True/" + reason))
			} else {
				Expect(f.condition("bad", fleetv1.ConditionReconciling)()).To(Equal("True/" + reason))
			}
			Expect(f.kstatus("bad")()).To(Equal(in.kstatus))
			msg := f.get("bad").Status.Conditions
			for _, c := range msg {
				Expect(c.Message).NotTo(BeEmpty(), "condition %s has no message", c.Type)
			}
			Eventually(f.eventReasons("bad")).Should(ContainElement(in.eventMatch))

			By("staying quiet: no status rewrites, no request storm on the hub")
			rv := f.get("bad").ResourceVersion
			before := hubRequests.Total()
			Consistently(func() string { return f.get("bad").ResourceVersion }, 2*time.Second).Should(Equal(rv))
			Expect(hubRequests.Total() - before).To(BeNumerically("<", 10))
			Expect(f.nodeNames("bad")()).To(BeEmpty())
		},
		Entry("missing Secret", badInput{connected: "Unknown/SecretNotFound", stalled: true, kstatus: status.FailedStatus, eventMatch: "SecretNotFound"}),
		Entry("a Secret not marked as a member kubeconfig", badInput{
			secret: func() map[string][]byte { return kubeconfigData(member1Direct) }, unmarked: true,
			connected: "Unknown/SecretNotMarked", stalled: true, kstatus: status.FailedStatus, eventMatch: "SecretNotMarked",
		}),
		Entry("missing key", badInput{
			secret:    func() map[string][]byte { return map[string][]byte{"config": member1Direct} },
			connected: "Unknown/SecretKeyNotFound", stalled: true, kstatus: status.FailedStatus, eventMatch: "SecretKeyNotFound",
		}),
		Entry("unparsable kubeconfig", badInput{
			secret:    func() map[string][]byte { return kubeconfigData([]byte("{{{ not a kubeconfig")) },
			connected: "Unknown/KubeconfigInvalid", stalled: true, kstatus: status.FailedStatus, eventMatch: "KubeconfigInvalid",
		}),
		Entry("exec plugin", badInput{
			secret:    func() map[string][]byte { return kubeconfigData([]byte(execKubeconfig)) },
			connected: "Unknown/ExecPluginRefused", stalled: true, kstatus: status.FailedStatus, eventMatch: "ExecPluginRefused",
		}),
		Entry("local token file", badInput{
			secret:    func() map[string][]byte { return kubeconfigData([]byte(fileKubeconfig)) },
			connected: "Unknown/LocalFileRefused", stalled: true, kstatus: status.FailedStatus, eventMatch: "LocalFileRefused",
		}),
		Entry("CA data that is not a certificate", badInput{
			secret:    func() map[string][]byte { return kubeconfigData([]byte(brokenCAKubeconfig)) },
			connected: "Unknown/CertificateDataInvalid", stalled: true, kstatus: status.FailedStatus, eventMatch: "CertificateDataInvalid",
		}),
		Entry("CA that did not sign the member's certificate", badInput{
			secret: func() map[string][]byte {
				b, err := framework.WithForeignCA(member1Direct)
				Expect(err).NotTo(HaveOccurred())
				return kubeconfigData(b)
			},
			connected: "False/CertificateUntrusted", stalled: true, kstatus: status.FailedStatus, eventMatch: "CertificateUntrusted",
		}),
		Entry("unreachable endpoint", badInput{
			secret: func() map[string][]byte {
				b, err := framework.WithServer(member1Direct, "https://127.0.0.1:1")
				Expect(err).NotTo(HaveOccurred())
				return kubeconfigData(b)
			},
			connected: "Unknown/Unreachable", stalled: false, kstatus: status.InProgressStatus, eventMatch: "Unreachable",
		}),
		Entry("an address the operator may not dial", badInput{
			secret: func() map[string][]byte {
				// The suite's operator allows 127.0.0.1 only; 127.0.0.2 is
				// loopback too, and denied before any dial.
				b, err := framework.WithServer(member1Direct, "https://127.0.0.2:6443")
				Expect(err).NotTo(HaveOccurred())
				return kubeconfigData(b)
			},
			connected: "False/AddressDenied", stalled: true, kstatus: status.FailedStatus, eventMatch: "AddressDenied",
		}),
		Entry("a proxy-url", badInput{
			secret:    func() map[string][]byte { return kubeconfigData([]byte(proxyKubeconfig)) },
			connected: "Unknown/ProxyRefused", stalled: true, kstatus: status.FailedStatus, eventMatch: "ProxyRefused",
		}),
		Entry("member RBAC forbidding list/watch nodes", badInput{
			secret:    func() map[string][]byte { return kubeconfigData(member1NoRBAC) },
			connected: "False/Forbidden", stalled: true, kstatus: status.FailedStatus, eventMatch: "Forbidden",
		}),
	)

	It("recovers by itself once the Secret is marked", func() {
		f := newFixture()
		n := f.node(member1, "mark", nil)
		f.secret("mark-kubeconfig", member1Direct)
		secret := &corev1.Secret{}
		Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "mark-kubeconfig"}, secret)).To(Succeed())
		secret.Labels = nil
		Expect(hub.Update(ctx, secret)).To(Succeed())
		f.cluster("mark")
		Eventually(f.condition("mark", fleetv1.ConditionStalled)).Should(Equal("True/SecretNotMarked"))
		secret.Labels = map[string]string{fleetv1.KubeconfigSecretLabel: "true"}
		Expect(hub.Update(ctx, secret)).To(Succeed())
		Eventually(f.condition("mark", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		Expect(f.nodeNames("mark")()).To(Equal([]string{n}))
	})

	It("recovers by itself once the missing Secret appears", func() {
		f := newFixture()
		n := f.node(member1, "late", nil)
		f.cluster("late")
		Eventually(f.condition("late", fleetv1.ConditionStalled)).Should(Equal("True/SecretNotFound"))
		f.secret("late-kubeconfig", member1Direct)
		Eventually(f.condition("late", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		Expect(f.nodeNames("late")()).To(Equal([]string{n}))
	})

	It("keeps the mirror when the member's RBAC is fixed later", func() {
		f := newFixture()
		n := f.node(member1, "rbac", nil)
		f.secret("rbac-kubeconfig", member1NoRBAC)
		f.cluster("rbac")
		Eventually(f.condition("rbac", fleetv1.ConditionConnected)).Should(Equal("False/Forbidden"))

		By("granting the read-only member role to the operator's user")
		rbac := member1.RbacV1()
		_, err := rbac.ClusterRoles().Create(ctx, nodeReader(f.label), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = rbac.ClusterRoleBindings().Create(ctx, nodeReaderBinding(f.label, "nobody"), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			_ = rbac.ClusterRoleBindings().Delete(ctx, f.label, metav1.DeleteOptions{})
			_ = rbac.ClusterRoles().Delete(ctx, f.label, metav1.DeleteOptions{})
		})
		Eventually(f.condition("rbac", fleetv1.ConditionReady), 45*time.Second).Should(Equal("True/Mirroring"))
		Expect(f.nodeNames("rbac")()).To(Equal([]string{n}))
	})
})

var _ = Describe("Schema validation", func() {
	var f *fixture
	BeforeEach(func() { f = newFixture() })

	create := func(mutate func(*fleetv1.ManagedCluster)) error {
		mc := &fleetv1.ManagedCluster{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "ok"},
			Spec:       fleetv1.ManagedClusterSpec{KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: "s"}},
		}
		mutate(mc)
		return hub.Create(ctx, mc)
	}

	It("defaults the key and the resync period", func() {
		Expect(create(func(*fleetv1.ManagedCluster) {})).To(Succeed())
		mc := f.get("ok")
		Expect(mc.Spec.KubeconfigSecretRef.Key).To(Equal("kubeconfig"))
		Expect(mc.Spec.ResyncPeriod.Duration).To(Equal(30 * time.Minute))
	})

	DescribeTable("refuses bad specs with a readable message",
		func(mutate func(*fleetv1.ManagedCluster), message string) {
			err := create(mutate)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("dotted name", func(mc *fleetv1.ManagedCluster) { mc.Name = "a.b" }, "metadata.name must be a DNS label"),
		Entry("resync too short", func(mc *fleetv1.ManagedCluster) {
			mc.Spec.ResyncPeriod = &metav1.Duration{Duration: 10 * time.Second}
		}, "resyncPeriod must be at least 1m"),
		Entry("bad selector operator", func(mc *fleetv1.ManagedCluster) {
			mc.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Maybe"}}}
		}, "operator must be one of In, NotIn, Exists, DoesNotExist"),
		Entry("In without values", func(mc *fleetv1.ManagedCluster) {
			mc.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpIn}}}
		}, "In and NotIn need values"),
		Entry("empty secret name", func(mc *fleetv1.ManagedCluster) { mc.Spec.KubeconfigSecretRef.Name = "" }, "kubeconfigSecretRef.name"),
	)

	DescribeTable("refuses oversize NodeSnapshots, whoever writes them",
		func(mutate func(*fleetv1.NodeSnapshotStatus), message string) {
			s := &fleetv1.NodeSnapshot{
				ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "big.n"},
				Spec:       fleetv1.NodeSnapshotSpec{ClusterName: "big", NodeName: "n"},
			}
			mutate(&s.Status)
			err := hub.Create(ctx, s)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(message))
		},
		Entry("too many labels", func(st *fleetv1.NodeSnapshotStatus) {
			st.Labels = map[string]string{}
			for i := range fleetv1.MaxSnapshotLabels + 1 {
				st.Labels[fmt.Sprintf("l%d", i)] = ""
			}
		}, "must have at most 256 items"),
		Entry("a long label value", func(st *fleetv1.NodeSnapshotStatus) {
			st.Labels = map[string]string{"a": strings.Repeat("v", 64)}
		}, "label keys are at most 317 bytes and values at most 63"),
		Entry("a long condition message", func(st *fleetv1.NodeSnapshotStatus) {
			st.Conditions = []fleetv1.NodeCondition{{Type: "Ready", Status: "True", Message: strings.Repeat("m", fleetv1.MaxConditionMessage+1)}}
		}, "may not be more than 1024 bytes"),
		Entry("a long version", func(st *fleetv1.NodeSnapshotStatus) {
			st.NodeInfo.KubeletVersion = strings.Repeat("1", fleetv1.MaxVersionLength+1)
		}, "may not be more than 64 bytes"),
		Entry("too many taints", func(st *fleetv1.NodeSnapshotStatus) {
			for i := range 65 {
				st.Taints = append(st.Taints, corev1.Taint{Key: fmt.Sprint("t", i), Effect: corev1.TaintEffectNoSchedule})
			}
		}, "must have at most 64 items"),
	)

	It("keeps a NodeSnapshot's identity immutable", func() {
		s := &fleetv1.NodeSnapshot{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "c.n"},
			Spec:       fleetv1.NodeSnapshotSpec{ClusterName: "c", NodeName: "n"},
		}
		Expect(hub.Create(ctx, s)).To(Succeed())
		s.Spec.NodeName = "other"
		err := hub.Update(ctx, s)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec is immutable"))
		Expect(hub.Get(ctx, client.ObjectKeyFromObject(s), s)).To(Succeed())
		Expect(s.Spec.NodeName).To(Equal("n"))
	})
})
