package managedcluster_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// nodeName makes member node names unique to the spec.
func (f *fixture) nodeName(short string) string { return f.label + "-" + short }

// node registers a ready node on a member, labelled for this spec.
func (f *fixture) node(cs kubernetes.Interface, short string, labels map[string]string) string {
	l := map[string]string{specLabel: f.label}
	maps.Copy(l, labels)
	n, err := framework.CreateNode(ctx, cs, framework.NewNode(f.nodeName(short), l))
	Expect(err).NotTo(HaveOccurred())
	return n.Name
}

func (f *fixture) secret(name string, kubeconfig []byte) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: map[string]string{fleetv1.KubeconfigSecretLabel: "true"}}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
	Expect(hub.Create(ctx, s)).To(Succeed())
}

// cluster creates a ManagedCluster that selects this spec's nodes and reads
// Secret name+"-kubeconfig".
func (f *fixture) cluster(name string, mutate ...func(*fleetv1.ManagedCluster)) *fleetv1.ManagedCluster {
	mc := &fleetv1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec: fleetv1.ManagedClusterSpec{
			KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: name + "-kubeconfig"},
			NodeSelector:        &metav1.LabelSelector{MatchLabels: map[string]string{specLabel: f.label}},
		},
	}
	for _, m := range mutate {
		m(mc)
	}
	Expect(hub.Create(ctx, mc)).To(Succeed())
	return mc
}

func (f *fixture) get(name string) *fleetv1.ManagedCluster {
	mc := &fleetv1.ManagedCluster{}
	Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: name}, mc)).To(Succeed())
	return mc
}

// update applies mutate to the latest ManagedCluster, retrying on conflict.
func (f *fixture) update(name string, mutate func(*fleetv1.ManagedCluster)) {
	Eventually(func() error {
		mc := f.get(name)
		mutate(mc)
		return hub.Update(ctx, mc)
	}).Should(Succeed())
}

// snapshots returns the cluster's NodeSnapshots by node name.
func (f *fixture) snapshots(cluster string) map[string]fleetv1.NodeSnapshot {
	var list fleetv1.NodeSnapshotList
	Expect(hub.List(ctx, &list, client.InNamespace(f.ns), client.MatchingLabels{fleetv1.ClusterLabel: cluster})).To(Succeed())
	out := map[string]fleetv1.NodeSnapshot{}
	for _, s := range list.Items {
		out[s.Spec.NodeName] = s
	}
	return out
}

// nodeNames is the sorted node names of snapshots, for Eventually.
func (f *fixture) nodeNames(cluster string) func() []string {
	return func() []string {
		return slices.Sorted(maps.Keys(f.snapshots(cluster)))
	}
}

func (f *fixture) snapshot(cluster, node string) func() fleetv1.NodeSnapshot {
	return func() fleetv1.NodeSnapshot { return f.snapshots(cluster)[node] }
}

// condition returns "Status/Reason" of a condition, for Eventually.
func (f *fixture) condition(cluster, t string) func() string {
	return func() string {
		c := meta.FindStatusCondition(f.get(cluster).Status.Conditions, t)
		if c == nil {
			return "<none>"
		}
		return string(c.Status) + "/" + c.Reason
	}
}

// kstatus computes the cluster's health the way Flux does: on the object
// as the hub serves it, read without a typed round trip.
func (f *fixture) kstatus(cluster string) func() status.Status {
	return func() status.Status {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("ManagedCluster"))
		Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: cluster}, u)).To(Succeed())
		return kstatusOf(u)
	}
}

func kstatusOf(u *unstructured.Unstructured) status.Status {
	res, err := status.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	return res.Status
}

// eventReasons lists the reasons of Events about the cluster.
func (f *fixture) eventReasons(cluster string) func() []string {
	return func() []string {
		var list eventsv1.EventList
		Expect(hub.List(ctx, &list, client.InNamespace(f.ns))).To(Succeed())
		var reasons []string
		for _, e := range list.Items {
			if e.Regarding.Name == cluster {
				reasons = append(reasons, e.Reason)
			}
		}
		return reasons
	}
}

func (f *fixture) snapshotWrites() int { return hubRequests.Writes(f.ns, "nodesnapshots") }

// metric reads a per-cluster series from the operator's registry.
func metric(name, cluster string, extra ...string) float64 {
	ns, n, _ := strings.Cut(cluster, "/")
	return framework.Metric(GinkgoTB(), ctrlmetrics.Registry, name, append([]string{"namespace", ns, "name", n}, extra...)...)
}

func keyOf(f *fixture, cluster string) string { return fmt.Sprintf("%s/%s", f.ns, cluster) }

// nodeReader is the read-only ClusterRole that members grant the operator,
// as shipped in config/member, under another name.
func nodeReader(name string) *rbacv1.ClusterRole {
	raw, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "config", "member", "clusterrole.yaml"))
	Expect(err).NotTo(HaveOccurred())
	role := &rbacv1.ClusterRole{}
	Expect(yaml.UnmarshalStrict(raw, role)).To(Succeed())
	role.Name = name
	return role
}

func nodeReaderBinding(name, user string) *rbacv1.ClusterRoleBinding {
	return &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: "rbac.authorization.k8s.io", Name: user}},
	}
}
