package managedcluster_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

var _ = Describe("Member credentials", func() {
	It("reports when the credential expires, and warns ahead of it", func() {
		f := newFixture()
		f.node(member1, "a", nil)
		// A bound ServiceAccount token of an hour, bound to the shipped
		// node reader on the member: inside the two weeks' warning.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: f.label, Namespace: "default"}}
		_, err := member1.CoreV1().ServiceAccounts("default").Create(ctx, sa, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		_, err = member1.RbacV1().ClusterRoles().Create(ctx, nodeReader(f.label), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		binding := nodeReaderBinding(f.label, "")
		binding.Subjects = []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: f.label}}
		_, err = member1.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		token, err := framework.Token(ctx, member1, "default", f.label)
		Expect(err).NotTo(HaveOccurred())
		asked := time.Now()
		raw, err := framework.TokenKubeconfig(member1Env.Config.Host, member1Env.Config.CAData, token)
		Expect(err).NotTo(HaveOccurred())

		f.secret("token-kubeconfig", raw)
		f.cluster("token")
		Eventually(f.condition("token", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		Eventually(f.condition("token", fleetv1.ConditionCredentialExpiring)).Should(Equal("True/" + fleetv1.ReasonCredentialExpiresSoon))
		got := f.get("token").Status.Credential
		Expect(got).NotTo(BeNil())
		Expect(got.Type).To(Equal("Token"))
		Expect(got.ExpiresAt).NotTo(BeNil())
		Expect(got.ExpiresAt.Time).To(BeTemporally("~", asked.Add(time.Hour), 10*time.Second))
		Eventually(f.eventReasons("token")).Should(ContainElement(fleetv1.ReasonCredentialExpiresSoon))
		Expect(framework.Metric(GinkgoTB(), ctrlmetrics.Registry, "nodemirror_member_credential_expiry_timestamp_seconds",
			"namespace", f.ns, "name", "token")).To(Equal(float64(got.ExpiresAt.Unix())))

		// A client certificate: its notAfter (envtest's last a week).
		f.secret("cert-kubeconfig", member1Direct)
		f.cluster("cert")
		Eventually(f.condition("cert", fleetv1.ConditionCredentialExpiring)).Should(Equal("True/" + fleetv1.ReasonCredentialExpiresSoon))
		cert := f.get("cert").Status.Credential
		Expect(cert).NotTo(BeNil())
		Expect(cert.Type).To(Equal("ClientCertificate"))
		Expect(cert.ExpiresAt).NotTo(BeNil())
		Expect(cert.ExpiresAt.Time).To(BeTemporally(">", time.Now().Add(24*time.Hour)))

		// A refused Secret says nothing of a credential.
		f.update("cert", func(mc *fleetv1.ManagedCluster) { mc.Spec.KubeconfigSecretRef.Name = "missing" })
		Eventually(f.condition("cert", fleetv1.ConditionReady)).Should(Equal("False/" + fleetv1.ReasonSecretNotFound))
		Expect(f.get("cert").Status.Credential).To(BeNil())
		Expect(f.condition("cert", fleetv1.ConditionCredentialExpiring)()).To(Equal("<none>"))
	})
})
