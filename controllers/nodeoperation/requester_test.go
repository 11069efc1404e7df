package nodeoperation_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// TestRequesterPolicy applies config/samples/requester-policy.yaml, a
// MutatingAdmissionPolicy the hub serves by default, and creates a
// NodeOperation as an editor: it carries the editor's name, whatever the
// editor put there.
func TestRequesterPolicy(t *testing.T) {
	f := newFixture(t)
	raw, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "config", "samples", "requester-policy.yaml"))
	f.must(err)
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		u := &unstructured.Unstructured{}
		f.must(yaml.Unmarshal([]byte(doc), &u.Object))
		f.must(hub.Create(ctx, u))
		t.Cleanup(func() { _ = hub.Delete(ctx, u) })
	}
	f.must(framework.ApplyUserRoles(ctx, hubCS))
	f.must(hub.Create(ctx, roleBinding(f.ns, "carol", "nodemirror-editor")))
	cfg := rest.CopyConfig(hubCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "carol"}
	carol, err := client.New(cfg, client.Options{Scheme: framework.Scheme(), Mapper: hub.RESTMapper()})
	f.must(err)
	// The policy takes effect once the API server has loaded it and the
	// CRD's schema (it polls its OpenAPI every 5s); until then creates
	// are refused as unavailable.
	framework.WaitFor(t, 45*time.Second, "a NodeOperation stamped with its creator", func() bool {
		op := &fleetv1.NodeOperation{
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: "stamped-", Annotations: map[string]string{fleetv1.NodeOperationRequesterAnnotation: "someone-else"}},
			Spec:       fleetv1.NodeOperationSpec{Clusters: names("none"), Nodes: fleetv1.NodeTargets{Names: []string{"n"}}, Action: fleetv1.ActionCordon, DryRun: true},
		}
		if err := carol.Create(ctx, op); err != nil {
			t.Logf("create as carol: %v", err)
			time.Sleep(time.Second)
			return false
		}
		return op.Annotations[fleetv1.NodeOperationRequesterAnnotation] == "carol"
	})
}
