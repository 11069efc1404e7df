package nodeoperation_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// TestAPIValidation: the schema's CEL rules and bounds, on the hub's API
// server. The operator does not need to check again what is tested here.
func TestAPIValidation(t *testing.T) {
	f := newFixture(t)
	nodes := fleetv1.NodeTargets{Names: []string{"n1"}}
	base := func(a fleetv1.NodeAction) fleetv1.NodeOperationSpec {
		return fleetv1.NodeOperationSpec{Clusters: names("c1"), Nodes: nodes, Action: a}
	}
	with := func(a fleetv1.NodeAction, m func(*fleetv1.NodeOperationSpec)) fleetv1.NodeOperationSpec {
		s := base(a)
		m(&s)
		return s
	}
	for _, tc := range []struct {
		name string
		spec fleetv1.NodeOperationSpec
		want string // "" for valid
	}{
		{"cordon", base(fleetv1.ActionCordon), ""},
		{"drain with options", with(fleetv1.ActionDrain, func(s *fleetv1.NodeOperationSpec) {
			s.Drain = &fleetv1.DrainOptions{IgnoreDaemonSets: true, Timeout: &metav1.Duration{Duration: 90e9}, GracePeriodSeconds: ptr.To[int64](5)}
		}), ""},
		{"label", with(fleetv1.ActionLabel, func(s *fleetv1.NodeOperationSpec) { s.Labels = map[string]string{"a": "b"} }), ""},
		{"clusters by selector", with(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) {
			s.Clusters = fleetv1.ClusterTargets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}
		}), ""},
		{"label without labels", base(fleetv1.ActionLabel), "labels is required for action label"},
		{"cordon with labels", with(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) { s.Labels = map[string]string{"a": "b"} }), "labels is required for action label and allowed for no other"},
		{"unlabel without keys", base(fleetv1.ActionUnlabel), "labelKeys is required"},
		{"taint without taints", base(fleetv1.ActionTaint), "taints is required"},
		{"untaint without keys", base(fleetv1.ActionUntaint), "taintKeys is required"},
		{"drain options on cordon", with(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) { s.Drain = &fleetv1.DrainOptions{} }), "drain options are allowed for action drain only"},
		{"both cluster names and selector", with(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) {
			s.Clusters.Selector = &metav1.LabelSelector{}
		}), "exactly one of clusters.names and clusters.selector"},
		{"no nodes", with(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) { s.Nodes = fleetv1.NodeTargets{} }), "exactly one of nodes.names and nodes.selector"},
		{"unknown action", with("reboot", func(*fleetv1.NodeOperationSpec) {}), "Unsupported value"},
		{"bad taint effect", with(fleetv1.ActionTaint, func(s *fleetv1.NodeOperationSpec) {
			s.Taints = []fleetv1.NodeTaint{{Key: "k", Effect: corev1.TaintEffect("Sometimes")}}
		}), "Unsupported value"},
		{"maxConcurrent 0", with(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) { s.MaxConcurrent = -1 }), "should be greater than or equal to 1"},
		{"bad timeout", with(fleetv1.ActionDrain, func(s *fleetv1.NodeOperationSpec) {
			s.Drain = &fleetv1.DrainOptions{Timeout: &metav1.Duration{Duration: -1e9}}
		}), "should match"},
		{"skipWaitForDeleteTimeout", with(fleetv1.ActionDrain, func(s *fleetv1.NodeOperationSpec) {
			s.Drain = &fleetv1.DrainOptions{SkipWaitForDeleteTimeout: &metav1.Duration{Duration: 20e9}}
		}), ""},
		{"skipWaitForDeleteTimeout 0s", with(fleetv1.ActionDrain, func(s *fleetv1.NodeOperationSpec) {
			s.Drain = &fleetv1.DrainOptions{SkipWaitForDeleteTimeout: &metav1.Duration{}}
		}), ""},
		{"negative skipWaitForDeleteTimeout", with(fleetv1.ActionDrain, func(s *fleetv1.NodeOperationSpec) {
			s.Drain = &fleetv1.DrainOptions{SkipWaitForDeleteTimeout: &metav1.Duration{Duration: -1e9}}
		}), "should match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := &fleetv1.NodeOperation{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: "v-"}, Spec: tc.spec}
			err := hub.Create(ctx, op)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid spec refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("invalid spec accepted, want an error with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q, want one with %q", err, tc.want)
			}
			if err == nil && tc.name == "cordon" {
				if op.Spec.MaxConcurrent != 5 {
					t.Errorf("maxConcurrent defaults to %d, want 5", op.Spec.MaxConcurrent)
				}
				// A patch, not an update: the operator may have changed the
				// object meanwhile (its finalizer), which an update would
				// meet as a conflict before the rule is checked.
				orig := op.DeepCopy()
				op.Spec.Action = fleetv1.ActionUncordon
				if err := hub.Patch(ctx, op, client.MergeFrom(orig)); err == nil || !strings.Contains(err.Error(), "spec is immutable") {
					t.Errorf("changing the spec: %v, want spec is immutable", err)
				}
			}
		})
	}
}
