package join_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// The whole way: join a member, the operator mirrors its nodes with the
// credential join made, a rejoin rotates it under the running operator,
// and unjoin takes everything away on both sides. It is the only test of
// member B, whose nodemirror-member namespace stays Terminating after it
// (envtest runs no namespace controller).
func TestJoinMirrorsAndUnjoinRemovesEverything(t *testing.T) {
	const ns = "fleet-op"
	ctx := context.Background()
	hubNamespace(t, ns)
	stop, err := framework.StartOperator(ctx, hubConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	if _, err := framework.CreateNode(ctx, memberB, framework.NewNode("node-0", nil)); err != nil {
		t.Fatal(err)
	}

	mustCLI(t, "join", "edge-b", "--member-context", memberBContext, "--hub-context", hubContext, "-n", ns)
	snapshots := func() int {
		var list fleetv1.NodeSnapshotList
		if err := hub.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{fleetv1.ClusterLabel: "edge-b"}); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	ready := func() bool {
		mc := &fleetv1.ManagedCluster{}
		if err := hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: "edge-b"}, mc); err != nil {
			return false
		}
		c := meta.FindStatusCondition(mc.Status.Conditions, fleetv1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == mc.Generation
	}
	framework.WaitFor(t, time.Minute, "ManagedCluster edge-b Ready with its node mirrored", func() bool { return ready() && snapshots() == 1 })

	// Rotation under the running operator: the new Secret is used and the
	// cluster stays Ready with its snapshot.
	_, before := hubSecretKubeconfig(t, ns, "edge-b-kubeconfig")
	mustCLI(t, "join", "edge-b", "--member-context", memberBContext, "--hub-context", hubContext, "-n", ns)
	_, after := hubSecretKubeconfig(t, ns, "edge-b-kubeconfig")
	if string(before) == string(after) {
		t.Fatal("rejoin did not rotate the kubeconfig")
	}
	if _, err := framework.CreateNode(ctx, memberB, framework.NewNode("node-1", nil)); err != nil {
		t.Fatal(err)
	}
	framework.WaitFor(t, time.Minute, "the node added after the rotation mirrored", func() bool { return ready() && snapshots() == 2 })

	_, cs := asOperator(t, after)
	stdout, _ := mustCLI(t, "unjoin", "edge-b", "--hub-context", hubContext, "-n", ns, "--member-context", memberBContext)
	for _, want := range []string{
		`hub "hub": deleted ManagedCluster fleet-op/edge-b; the operator removed its NodeSnapshots`,
		`hub "hub": deleted Secret fleet-op/edge-b-kubeconfig`,
		`member "member-b": deleted ClusterRoleBinding nodemirror-member-reader, ServiceAccount nodemirror-member/nodemirror-hub, ClusterRole nodemirror-member-reader, Namespace nodemirror-member`,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := snapshots(); n != 0 {
		t.Fatalf("%d NodeSnapshots left", n)
	}
	for _, obj := range []client.Object{
		&fleetv1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge-b"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge-b-kubeconfig"}},
	} {
		if err := hub.Get(ctx, client.ObjectKeyFromObject(obj), obj); !apierrors.IsNotFound(err) {
			t.Fatalf("hub %T %s: %v, want NotFound", obj, obj.GetName(), err)
		}
	}
	if _, err := memberB.RbacV1().ClusterRoleBindings().Get(ctx, "nodemirror-member-reader", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("member ClusterRoleBinding: %v", err)
	}
	if _, err := memberB.RbacV1().ClusterRoles().Get(ctx, "nodemirror-member-reader", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("member ClusterRole: %v", err)
	}
	if _, err := memberB.CoreV1().ServiceAccounts("nodemirror-member").Get(ctx, "nodemirror-hub", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("member ServiceAccount: %v", err)
	}
	// With its ServiceAccount gone the bound token is dead, once the API
	// server's token cache (10 s) has let go of it.
	framework.WaitFor(t, 30*time.Second, "the unjoined token refused", func() bool {
		_, err := whoAmI(cs)
		return apierrors.IsUnauthorized(err)
	})
}

// --member-server is what the hub dials; the check of the new token still
// goes through the member context.
func TestMemberServer(t *testing.T) {
	const ns = "fleet-server"
	hubNamespace(t, ns)
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	server := strings.Replace(cfg.Clusters[memberAContext].Server, "127.0.0.1", "localhost", 1)
	mustCLI(t, "join", "named", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--member-server", server)
	_, raw := hubSecretKubeconfig(t, ns, "named-kubeconfig")
	rc, err := clientcmd.RESTConfigFromKubeConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != server {
		t.Fatalf("hub kubeconfig server %s, want %s", rc.Host, server)
	}
	// The member's serving certificate names localhost too, so the CA
	// join copied verifies it there.
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if user, err := whoAmI(cs); err != nil || user != hubUser {
		t.Fatalf("through %s: %q, %v", server, user, err)
	}
}
