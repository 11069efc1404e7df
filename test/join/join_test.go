package join_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
)

const hubUser = "system:serviceaccount:nodemirror-member:nodemirror-hub"

// operatorPolicy is the operator's default Policy, opened for the suite's
// members on 127.0.0.1 as the test operator is.
var operatorPolicy = member.Policy{Network: member.Network{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}

// hubSecretKubeconfig reads the kubeconfig of a hub Secret, checking it is
// a Secret the operator will use.
func hubSecretKubeconfig(t *testing.T, namespace, name string) (*corev1.Secret, []byte) {
	t.Helper()
	s := &corev1.Secret{}
	if err := hub.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, s); err != nil {
		t.Fatalf("hub Secret %s/%s: %v", namespace, name, err)
	}
	if s.Type != corev1.SecretTypeOpaque || s.Labels[fleetv1.KubeconfigSecretLabel] != "true" {
		t.Fatalf("hub Secret %s/%s: type %q, labels %v", namespace, name, s.Type, s.Labels)
	}
	raw := s.Data[fleetv1.DefaultKubeconfigKey]
	if len(raw) == 0 {
		t.Fatalf("hub Secret %s/%s has no key %s", namespace, name, fleetv1.DefaultKubeconfigKey)
	}
	return s, raw
}

// asOperator builds what the operator builds from a member kubeconfig: a
// rest.Config under its default policy (no exec plugins, no files).
func asOperator(t *testing.T, kubeconfig []byte) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	cfg, err := operatorPolicy.RESTConfig(kubeconfig)
	if err != nil {
		t.Fatalf("the operator refuses the kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, cs
}

func whoAmI(cs kubernetes.Interface) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

// checkReadOnly proves the kubeconfig is the member's read-only identity:
// nodes and health yes, secrets and pods no.
func checkReadOnly(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if user, err := whoAmI(cs); err != nil || user != hubUser {
		t.Fatalf("authenticates as %q (%v), want %s", user, err, hubUser)
	}
	if _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("listing nodes: %v", err)
	}
	if _, err := cs.Discovery().ServerVersion(); err != nil {
		t.Fatalf("/version: %v", err)
	}
	if err := cs.CoreV1().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets: %v, want Forbidden", err)
	}
	if _, err := cs.CoreV1().Secrets("nodemirror-member").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing its own namespace's secrets: %v, want Forbidden", err)
	}
	if _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing pods: %v, want Forbidden", err)
	}
	if err := cs.CoreV1().Nodes().Delete(ctx, "any", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("deleting a node: %v, want Forbidden", err)
	}
}

func managedCluster(t *testing.T, namespace, name string) *fleetv1.ManagedCluster {
	t.Helper()
	mc := &fleetv1.ManagedCluster{}
	if err := hub.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, mc); err != nil {
		t.Fatalf("ManagedCluster %s/%s: %v", namespace, name, err)
	}
	return mc
}

func TestJoinBoundTokenAndRotate(t *testing.T) {
	const ns = "fleet-bound"
	hubNamespace(t, ns)
	stdout, _ := mustCLI(t, "join", "edge", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns)
	for _, want := range []string{
		`member "member-a": applied Namespace nodemirror-member, ClusterRole nodemirror-member-reader, ServiceAccount nodemirror-member/nodemirror-hub, ClusterRoleBinding nodemirror-member-reader`,
		"(in 365 days)",
		`hub "hub": applied Secret fleet-bound/edge-kubeconfig`,
		`hub "hub": applied ManagedCluster fleet-bound/edge`,
		"Rotate before",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	mc := managedCluster(t, ns, "edge")
	if mc.Spec.KubeconfigSecretRef != (fleetv1.SecretKeyRef{Name: "edge-kubeconfig", Key: "kubeconfig"}) {
		t.Fatalf("ManagedCluster references %+v", mc.Spec.KubeconfigSecretRef)
	}
	secret, raw := hubSecretKubeconfig(t, ns, "edge-kubeconfig")
	if strings.Contains(string(raw), "exec:") || strings.Contains(string(raw), "client-certificate") {
		t.Fatalf("kubeconfig holds more than a token and a CA:\n%s", raw)
	}
	cfg, cs := asOperator(t, raw)
	checkReadOnly(t, cs)

	// The token says when it expires: a year from now (envtest's API
	// server does not cap token lifetimes).
	expiry, kind, err := member.CredentialExpiry(cfg)
	if err != nil || kind != member.CredentialToken {
		t.Fatalf("CredentialExpiry: %v, %q, %v", expiry, kind, err)
	}
	if d := time.Until(expiry) - 8760*time.Hour; d > time.Minute || d < -2*time.Minute {
		t.Fatalf("token expires %s, want about a year from now", expiry)
	}
	if !strings.Contains(stdout, expiry.Format(time.RFC3339)) {
		t.Errorf("the output does not give the expiry %s", expiry.Format(time.RFC3339))
	}

	// A user's own settings on the ManagedCluster survive a rejoin.
	patch := []byte(`{"apiVersion":"fleet.nodemirror.io/v1alpha1","kind":"ManagedCluster","metadata":{"name":"edge","namespace":"fleet-bound"},"spec":{"nodeSelector":{"matchLabels":{"pool":"gpu"}}}}`)
	if err := hub.Patch(context.Background(), mc, client.RawPatch("application/apply-patch+yaml", patch), client.FieldOwner("platform-team")); err != nil {
		t.Fatal(err)
	}
	mc = managedCluster(t, ns, "edge")

	// Rotation: join again.
	stdout, _ = mustCLI(t, "join", "edge", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--token-ttl", "720h")
	rotated, raw2 := hubSecretKubeconfig(t, ns, "edge-kubeconfig")
	if rotated.ResourceVersion == secret.ResourceVersion {
		t.Fatal("the Secret was not updated")
	}
	cfg2, cs2 := asOperator(t, raw2)
	if cfg2.BearerToken == cfg.BearerToken {
		t.Fatal("join again kept the old token")
	}
	checkReadOnly(t, cs2)
	expiry2, _, err := member.CredentialExpiry(cfg2)
	if err != nil || time.Until(expiry2) > 721*time.Hour || time.Until(expiry2) < 719*time.Hour {
		t.Fatalf("rotated token expires %s (%v), want in 720h", expiry2, err)
	}
	if !strings.Contains(stdout, "(in 30 days)") {
		t.Errorf("output does not say 30 days")
	}
	again := managedCluster(t, ns, "edge")
	if again.ResourceVersion != mc.ResourceVersion || again.Generation != mc.Generation ||
		again.Spec.NodeSelector == nil || again.Spec.NodeSelector.MatchLabels["pool"] != "gpu" {
		t.Fatalf("the ManagedCluster changed: resourceVersion %s → %s, generation %d → %d, nodeSelector %v",
			mc.ResourceVersion, again.ResourceVersion, mc.Generation, again.Generation, again.Spec.NodeSelector)
	}
	// The old bound token stays valid until it expires: that is what
	// bound tokens are (docs/members.md says so).
	if user, err := whoAmI(cs); err != nil || user != hubUser {
		t.Fatalf("old token: %q, %v", user, err)
	}
}

func TestDryRunWritesNothingToTheHub(t *testing.T) {
	const ns = "fleet-dry"
	hubNamespace(t, ns)
	stdout, stderr := mustCLI(t, "join", "edge", "--member-context", memberAContext, "-n", ns, "--dry-run", "-o", "yaml")
	if !strings.Contains(stderr, "nothing was written to the hub") || !strings.Contains(stderr, "live credential") {
		t.Errorf("stderr does not warn about the live credential:\n%s", stderr)
	}
	var secrets corev1.SecretList
	if err := hub.List(context.Background(), &secrets, client.InNamespace(ns)); err != nil || len(secrets.Items) != 0 {
		t.Fatalf("hub Secrets in %s: %d, %v", ns, len(secrets.Items), err)
	}
	var mcs fleetv1.ManagedClusterList
	if err := hub.List(context.Background(), &mcs, client.InNamespace(ns)); err != nil || len(mcs.Items) != 0 {
		t.Fatalf("hub ManagedClusters in %s: %d, %v", ns, len(mcs.Items), err)
	}

	// stdout is YAML documents: the Secret, then the ManagedCluster, that
	// the hub accepts as they are.
	dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(stdout), 4096)
	secret := &corev1.Secret{}
	mc := &fleetv1.ManagedCluster{}
	if err := dec.Decode(secret); err != nil || secret.Kind != "Secret" {
		t.Fatalf("first document: %v, kind %q", err, secret.Kind)
	}
	if err := dec.Decode(mc); err != nil || mc.Kind != "ManagedCluster" {
		t.Fatalf("second document: %v, kind %q", err, mc.Kind)
	}
	var extra map[string]any
	if err := dec.Decode(&extra); err == nil {
		t.Fatalf("a third document: %v", extra)
	}
	_, cs := asOperator(t, secret.Data[fleetv1.DefaultKubeconfigKey])
	checkReadOnly(t, cs)
	if secret.Namespace != ns || mc.Namespace != ns || mc.Spec.KubeconfigSecretRef.Name != secret.Name {
		t.Fatalf("Secret %s/%s, ManagedCluster %s/%s → %s", secret.Namespace, secret.Name, mc.Namespace, mc.Name, mc.Spec.KubeconfigSecretRef.Name)
	}
	// Applied by GitOps, they are what join would have written.
	for _, obj := range []client.Object{secret, mc} {
		if err := hub.Create(context.Background(), obj); err != nil {
			t.Fatalf("creating the printed %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, err)
		}
	}
	hubSecretKubeconfig(t, ns, "edge-kubeconfig")

	stdout, _ = mustCLI(t, "join", "edge", "--member-context", memberAContext, "-n", ns, "--dry-run", "-o", "json")
	var list struct {
		Kind  string
		Items []json.RawMessage
	}
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || list.Kind != "List" || len(list.Items) != 2 {
		t.Fatalf("-o json: %v, %q, %d items", err, list.Kind, len(list.Items))
	}

	// The member's side for GitOps is the shipped config/member.
	stdout, _ = mustCLI(t, "member-rbac")
	dec = yaml.NewYAMLOrJSONDecoder(strings.NewReader(stdout), 4096)
	var kinds []string
	for {
		var obj metav1.PartialObjectMetadata
		if err := dec.Decode(&obj); err != nil {
			break
		}
		kinds = append(kinds, obj.Kind+"/"+obj.Name)
	}
	if strings.Join(kinds, " ") != "Namespace/nodemirror-member ClusterRole/nodemirror-member-reader ServiceAccount/nodemirror-hub ClusterRoleBinding/nodemirror-member-reader" {
		t.Fatalf("member-rbac printed %v", kinds)
	}
}

// Without an operator nobody removes the finalizer: unjoin says so and
// stops waiting, and still deletes the Secret.
func TestUnjoinWithoutOperatorStopsWaiting(t *testing.T) {
	const ns = "fleet-held"
	hubNamespace(t, ns)
	mustCLI(t, "join", "held", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns)
	// Standing in for an operator that reconciled the cluster and has
	// stopped since: the finalizer it adds.
	mc := managedCluster(t, ns, "held")
	mc.Finalizers = []string{fleetv1.ManagedClusterFinalizer}
	if err := hub.Update(context.Background(), mc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mc := &fleetv1.ManagedCluster{}
		if hub.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "held"}, mc) == nil {
			mc.Finalizers = nil
			_ = hub.Update(context.Background(), mc)
		}
	})

	start := time.Now()
	stdout, _, err := cli(t, "unjoin", "held", "--hub-context", hubContext, "-n", ns, "--wait-timeout", "2s")
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("unjoin took %s with --wait-timeout 2s", took)
	}
	if err == nil {
		t.Fatal("unjoin succeeded while the ManagedCluster is still there")
	}
	for _, want := range []string{`hub context "hub"`, "ManagedCluster fleet-held/held is still terminating after 2s", fleetv1.ManagedClusterFinalizer, "is the operator running"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if !strings.Contains(stdout, `hub "hub": deleted Secret fleet-held/held-kubeconfig`) {
		t.Errorf("output does not say the Secret was deleted")
	}
	if err := hub.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "held-kubeconfig"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("hub Secret: %v, want NotFound", err)
	}
	if mc := managedCluster(t, ns, "held"); mc.DeletionTimestamp == nil {
		t.Fatal("the ManagedCluster is not being deleted")
	}

	// A ManagedCluster that no operator ever saw has no finalizer and goes
	// at once; a Secret not labelled as a kubeconfig is not deleted.
	mustCLI(t, "join", "plain", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--secret-name", "shared-kubeconfig")
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "plain-kubeconfig"}, StringData: map[string]string{"x": "y"}}
	if err := hub.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	stdout, _ = mustCLI(t, "unjoin", "plain", "--hub-context", hubContext, "-n", ns, "--secret-name", "plain-kubeconfig")
	if !strings.Contains(stdout, "deleted ManagedCluster fleet-held/plain") || !strings.Contains(stdout, "left Secret fleet-held/plain-kubeconfig in place") {
		t.Errorf("unexpected output:\n%s", stdout)
	}
	if err := hub.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "plain-kubeconfig"}, &corev1.Secret{}); err != nil {
		t.Fatalf("the unlabelled Secret: %v", err)
	}
	// unjoin of what is gone says so and succeeds.
	stdout, _ = mustCLI(t, "unjoin", "plain", "--hub-context", hubContext, "-n", ns, "--secret-name", "shared-kubeconfig")
	if !strings.Contains(stdout, "ManagedCluster fleet-held/plain not found") || !strings.Contains(stdout, "deleted Secret fleet-held/shared-kubeconfig") {
		t.Errorf("unexpected output:\n%s", stdout)
	}
}

func TestServiceAccountToken(t *testing.T) {
	const ns = "fleet-legacy"
	hubNamespace(t, ns)
	ctx := context.Background()
	const secretName = "nodemirror-hub-token"

	// envtest runs no kube-controller-manager, so nobody fills the Secret:
	// join waits as long as it was told and says who should have.
	start := time.Now()
	_, _, err := cli(t, "join", "legacy", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns,
		"--credential", "service-account-token", "--token-wait-timeout", "2s")
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("join took %s with --token-wait-timeout 2s", took)
	}
	if err == nil {
		t.Fatal("join succeeded without a token")
	}
	for _, want := range []string{`member context "member-a"`, "Secret nodemirror-member/nodemirror-hub-token has no data.token after 2s", "token controller of kube-controller-manager", "--credential bound-token"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if err := hub.Get(ctx, client.ObjectKey{Namespace: ns, Name: "legacy-kubeconfig"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Fatalf("hub Secret written without a credential: %v", err)
	}
	s, err := memberA.CoreV1().Secrets("nodemirror-member").Get(ctx, secretName, metav1.GetOptions{})
	if err != nil || s.Type != corev1.SecretTypeServiceAccountToken || s.Annotations[corev1.ServiceAccountNameKey] != "nodemirror-hub" {
		t.Fatalf("member token Secret: %v %+v", err, s)
	}

	// STAND-IN FOR KUBE-CONTROLLER-MANAGER'S TOKEN CONTROLLER, which
	// envtest does not run: it fills data.token of the Secret, here with a
	// TokenRequest token of the ServiceAccount (the real controller signs a
	// legacy token without exp). It proves the CLI waits for it and then
	// uses what the controller wrote.
	standIn, stop := context.WithCancel(ctx)
	defer stop()
	filled := make(chan string, 4)
	go func() {
		for standIn.Err() == nil {
			s, err := memberA.CoreV1().Secrets("nodemirror-member").Get(standIn, secretName, metav1.GetOptions{})
			if err == nil && len(s.Data[corev1.ServiceAccountTokenKey]) == 0 {
				tr, err := memberA.CoreV1().ServiceAccounts("nodemirror-member").CreateToken(standIn, "nodemirror-hub", &authnv1.TokenRequest{}, metav1.CreateOptions{})
				if err == nil {
					s.Data = map[string][]byte{corev1.ServiceAccountTokenKey: []byte(tr.Status.Token)}
					if _, err := memberA.CoreV1().Secrets("nodemirror-member").Update(standIn, s, metav1.UpdateOptions{}); err == nil {
						filled <- tr.Status.Token
					}
				}
			}
			select {
			case <-standIn.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()

	stdout, _ := mustCLI(t, "join", "legacy", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--credential", "service-account-token")
	token := <-filled
	_, raw := hubSecretKubeconfig(t, ns, "legacy-kubeconfig")
	cfg, cs := asOperator(t, raw)
	if cfg.BearerToken != token {
		t.Fatal("the hub kubeconfig does not hold the token of the member Secret")
	}
	checkReadOnly(t, cs)
	if !strings.Contains(stdout, "service-account-token from Secret nodemirror-member/nodemirror-hub-token") {
		t.Errorf("output does not name the token Secret")
	}

	// Joining again keeps a non-expiring token; --rotate replaces it and
	// the old one stops working.
	mustCLI(t, "join", "legacy", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--credential", "service-account-token")
	if _, raw := hubSecretKubeconfig(t, ns, "legacy-kubeconfig"); !strings.Contains(string(raw), token) {
		t.Fatal("join without --rotate changed the token")
	}
	mustCLI(t, "join", "legacy", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--credential", "service-account-token", "--rotate")
	rotatedToken := <-filled
	_, raw = hubSecretKubeconfig(t, ns, "legacy-kubeconfig")
	cfg, cs = asOperator(t, raw)
	if cfg.BearerToken != rotatedToken || rotatedToken == token {
		t.Fatal("--rotate did not put the new token in the hub Secret")
	}
	checkReadOnly(t, cs)
}

// The kubeconfig must name the member's CA: read from a file of the
// joining machine, it lands in the Secret as data.
func TestJoinReadsTheCAFile(t *testing.T) {
	const ns = "fleet-cafile"
	hubNamespace(t, ns)
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := cfg.Clusters[memberAContext]
	caFile := dir + "/member-ca.crt"
	if err := os.WriteFile(caFile, c.CertificateAuthorityData, 0o600); err != nil {
		t.Fatal(err)
	}
	c.CertificateAuthorityData, c.CertificateAuthority = nil, caFile
	path := dir + "/kubeconfig"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "join", "cafile", "--member-context", memberAContext, "--hub-context", hubContext, "-n", ns, "--kubeconfig", path)
	_, raw := hubSecretKubeconfig(t, ns, "cafile-kubeconfig")
	if strings.Contains(string(raw), caFile) {
		t.Fatal("the hub kubeconfig names the local CA file")
	}
	_, cs := asOperator(t, raw)
	checkReadOnly(t, cs)
}

// Errors name the context and the object.
func TestErrorsNameContextAndObject(t *testing.T) {
	_, _, err := cli(t, "join", "edge", "--member-context", memberAContext, "--hub-context", hubContext, "-n", "no-such-namespace")
	if err == nil || !strings.Contains(err.Error(), `hub context "hub": applying Secret no-such-namespace/edge-kubeconfig`) || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("error %v", err)
	}
	_, _, err = cli(t, "join", "edge", "--member-context", "nowhere", "--hub-context", hubContext)
	if err == nil || !strings.Contains(err.Error(), `member context "nowhere" is not in the kubeconfig`) {
		t.Fatalf("error %v", err)
	}
}
