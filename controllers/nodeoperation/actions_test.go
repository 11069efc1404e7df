package nodeoperation_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/controllers/nodeoperation"
	"github.com/nodemirror/nodemirror/test/framework"
)

// TestActionsOnTwoMembers runs every action but drain on nodes of two
// members chosen by a cluster selector and a selector over mirrored node
// labels, then again on nodes already so.
func TestActionsOnTwoMembers(t *testing.T) {
	f := newFixture(t)
	pool := map[string]string{"pool": "blue"}
	a := f.node(0, "a", pool)
	b := f.node(0, "b", pool)
	other := f.node(0, "other", map[string]string{"pool": "green"})
	c := f.node(1, "c", pool)
	f.cluster("east", operatorKubeconfig[0], 3, map[string]string{"env": "prod"})
	f.cluster("west", operatorKubeconfig[1], 1, map[string]string{"env": "prod"})
	prod := fleetv1.ClusterTargets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}
	blue := fleetv1.NodeTargets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "blue"}}}
	targets := []struct {
		member  int
		cluster string
		node    string
	}{{0, "east", a}, {0, "east", b}, {1, "west", c}}
	spec := func(action fleetv1.NodeAction, m ...func(*fleetv1.NodeOperationSpec)) fleetv1.NodeOperationSpec {
		s := fleetv1.NodeOperationSpec{Clusters: prod, Nodes: blue, Action: action, MaxConcurrent: 2}
		for _, f := range m {
			f(&s)
		}
		return s
	}
	// check runs an operation twice: the first changes every node, the
	// second finds them so and writes nothing.
	check := func(s fleetv1.NodeOperationSpec, holds func(*corev1.Node) bool) {
		t.Helper()
		for round, reason := range []string{fleetv1.ReasonChanged, fleetv1.ReasonUnchanged} {
			before := map[string]string{}
			for _, tg := range targets {
				before[tg.node] = f.memberNode(tg.member, tg.node).ResourceVersion
			}
			op := f.run(s)
			if op.Status.Phase != fleetv1.OperationSucceeded || op.Status.Counts != counts(3, 3, 0, 0) {
				t.Fatalf("%s round %d: phase %s counts %+v results %+v", s.Action, round, op.Status.Phase, op.Status.Counts, op.Status.Results)
			}
			if op.Status.Targets != "2 clusters, 3 nodes" {
				t.Errorf("targets %q", op.Status.Targets)
			}
			for _, tg := range targets {
				res := result(op, tg.cluster, tg.node)
				n := f.memberNode(tg.member, tg.node)
				if res.Reason != reason || !holds(n) {
					t.Errorf("%s round %d on %s/%s: result %+v; node spec %+v labels %v", s.Action, round, tg.cluster, tg.node, res, n.Spec, n.Labels)
				}
				if reason == fleetv1.ReasonUnchanged && n.ResourceVersion != before[tg.node] {
					t.Errorf("%s on %s, already so, wrote the node", s.Action, tg.node)
				}
			}
			if n := f.memberNode(0, other); n.Spec.Unschedulable || n.Labels["team"] != "" || len(n.Spec.Taints) > 0 {
				t.Errorf("%s touched node %s, outside the selector: %+v", s.Action, other, n.Spec)
			}
		}
	}
	check(spec(fleetv1.ActionCordon), func(n *corev1.Node) bool { return n.Spec.Unschedulable })
	check(spec(fleetv1.ActionUncordon), func(n *corev1.Node) bool { return !n.Spec.Unschedulable })
	check(spec(fleetv1.ActionLabel, func(s *fleetv1.NodeOperationSpec) { s.Labels = map[string]string{"team": "storage"} }),
		func(n *corev1.Node) bool { return n.Labels["team"] == "storage" && n.Labels["pool"] == "blue" })
	check(spec(fleetv1.ActionUnlabel, func(s *fleetv1.NodeOperationSpec) { s.LabelKeys = []string{"team"} }),
		func(n *corev1.Node) bool { _, ok := n.Labels["team"]; return !ok && n.Labels["pool"] == "blue" })
	taint := corev1.Taint{Key: "dedicated", Value: "storage", Effect: corev1.TaintEffectNoSchedule}
	check(spec(fleetv1.ActionTaint, func(s *fleetv1.NodeOperationSpec) {
		s.Taints = []fleetv1.NodeTaint{{Key: taint.Key, Value: taint.Value, Effect: taint.Effect}}
	}), func(n *corev1.Node) bool {
		return slices.ContainsFunc(n.Spec.Taints, func(x corev1.Taint) bool { return x.MatchTaint(&taint) && x.Value == "storage" })
	})
	check(spec(fleetv1.ActionUntaint, func(s *fleetv1.NodeOperationSpec) { s.TaintKeys = []fleetv1.TaintKey{{Key: "dedicated"}} }),
		func(n *corev1.Node) bool {
			return !slices.ContainsFunc(n.Spec.Taints, func(x corev1.Taint) bool { return x.Key == "dedicated" })
		})

	// A dry run reports and changes nothing.
	op := f.run(spec(fleetv1.ActionCordon, func(s *fleetv1.NodeOperationSpec) { s.DryRun = true }))
	if op.Status.Phase != fleetv1.OperationSucceeded || op.Status.Counts != counts(3, 0, 0, 3) {
		t.Fatalf("dry run: %s %+v", op.Status.Phase, op.Status.Counts)
	}
	for _, tg := range targets {
		if res := result(op, tg.cluster, tg.node); res.Reason != fleetv1.ReasonDryRun || !strings.Contains(res.Message, "would cordon") {
			t.Errorf("dry run result %+v", res)
		}
		if f.memberNode(tg.member, tg.node).Spec.Unschedulable {
			t.Errorf("dry run cordoned %s", tg.node)
		}
	}
	if got := f.kstatus(op.Name); got != status.CurrentStatus {
		t.Errorf("kstatus of a succeeded operation: %s, want Current", got)
	}
	if op.Status.ObservedGeneration != op.Generation || condition(op, "Ready") != "True/Succeeded" || op.Status.StartTime == nil || op.Status.CompletionTime == nil {
		t.Errorf("status %+v", op.Status)
	}
	reasons := f.eventReasons(op.Name)
	framework.WaitFor(t, 10*time.Second, "Started and Succeeded events", func() bool {
		reasons = f.eventReasons(op.Name)
		return slices.Contains(reasons, "Started") && slices.Contains(reasons, "Succeeded")
	})
}

// TestClustersThatCannotBeActedOn: a paused cluster's nodes are skipped,
// a member without the operations role forbids, unknown clusters and
// nodes fail, and the operation fails as kstatus reads it.
func TestClustersThatCannotBeActedOn(t *testing.T) {
	f := newFixture(t)
	a := f.node(0, "a", nil)
	c := f.node(1, "c", nil)
	f.cluster("paused", operatorKubeconfig[0], 1, nil)
	f.cluster("readonly", readOnlyKubeconfig, 1, nil)
	var mc fleetv1.ManagedCluster
	f.must(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "paused"}, &mc))
	mc.Spec.Paused = true
	f.must(hub.Update(ctx, &mc))

	op := f.run(fleetv1.NodeOperationSpec{
		Clusters: names("paused", "readonly", "gone"),
		Nodes:    fleetv1.NodeTargets{Names: []string{a, c, "no-such-node"}},
		Action:   fleetv1.ActionCordon,
	})
	want := map[[2]string]string{
		{"paused", a}:                "Skipped/" + fleetv1.ReasonClusterPaused,
		{"paused", c}:                "Failed/" + fleetv1.ReasonNodeNotFound,
		{"paused", "no-such-node"}:   "Failed/" + fleetv1.ReasonNodeNotFound,
		{"readonly", c}:              "Failed/" + fleetv1.ReasonForbidden,
		{"readonly", a}:              "Failed/" + fleetv1.ReasonNodeNotFound,
		{"readonly", "no-such-node"}: "Failed/" + fleetv1.ReasonNodeNotFound,
		{"gone", a}:                  "Failed/" + fleetv1.ReasonClusterNotFound,
		{"gone", c}:                  "Failed/" + fleetv1.ReasonClusterNotFound,
		{"gone", "no-such-node"}:     "Failed/" + fleetv1.ReasonClusterNotFound,
	}
	for k, w := range want {
		res := result(op, k[0], k[1])
		if got := res.Phase + "/" + res.Reason; got != w {
			t.Errorf("%s/%s: %s (%s), want %s", k[0], k[1], got, res.Message, w)
		}
	}
	if msg := result(op, "readonly", c).Message; !strings.Contains(msg, "config/member-operations") {
		t.Errorf("Forbidden message %q does not say what to apply", msg)
	}
	if op.Status.Phase != fleetv1.OperationFailed || op.Status.Counts != counts(9, 0, 8, 1) {
		t.Errorf("phase %s counts %+v", op.Status.Phase, op.Status.Counts)
	}
	if got := f.kstatus(op.Name); got != status.FailedStatus {
		t.Errorf("kstatus of a failed operation: %s, want Failed", got)
	}
	if condition(op, "Stalled") != "True/Failed" || condition(op, "Ready") != "False/Failed" {
		t.Errorf("conditions %+v", op.Status.Conditions)
	}
	if f.memberNode(1, c).Spec.Unschedulable || f.memberNode(0, a).Spec.Unschedulable {
		t.Errorf("a node was cordoned")
	}

	// A cluster selected by label that does not exist gives no result; a
	// named one with nodes by selector gives one result for node "*".
	op = f.run(fleetv1.NodeOperationSpec{Clusters: names("gone"), Nodes: fleetv1.NodeTargets{Selector: &metav1.LabelSelector{}}, Action: fleetv1.ActionCordon})
	if res := result(op, "gone", nodeoperation.AnyNode); res.Reason != fleetv1.ReasonClusterNotFound || op.Status.Counts.Total != 1 {
		t.Errorf("unknown cluster by name with a node selector: %+v", op.Status)
	}
}

// TestHubRBAC: who may act is decided by the hub's RBAC on
// nodeoperations: the shipped viewer role may not create one, the editor
// role may.
func TestHubRBAC(t *testing.T) {
	f := newFixture(t)
	f.must(framework.ApplyUserRoles(ctx, hubCS))
	for _, b := range []struct{ user, role string }{{"alice", "nodemirror-viewer"}, {"bob", "nodemirror-viewer"}, {"bob", "nodemirror-editor"}} {
		f.must(hub.Create(ctx, roleBinding(f.ns, b.user, b.role)))
	}
	can := func(user, verb string) bool {
		sar := sarFor(user, f.ns, verb)
		f.must(hub.Create(ctx, sar))
		return sar.Status.Allowed
	}
	framework.WaitFor(t, 10*time.Second, "bindings in effect", func() bool { return can("bob", "create") })
	for _, c := range []struct {
		user, verb string
		want       bool
	}{{"alice", "get", true}, {"alice", "list", true}, {"alice", "create", false}, {"alice", "delete", false}, {"bob", "create", true}, {"bob", "delete", true}} {
		if got := can(c.user, c.verb); got != c.want {
			t.Errorf("%s may %s nodeoperations: %v, want %v", c.user, c.verb, got, c.want)
		}
	}
	// Nobody but the operator writes status.
	if can("bob", "update") && canStatus(f, "bob") {
		t.Errorf("an editor may write nodeoperations/status")
	}
}

func (f *fixture) eventReasons(name string) []string {
	var list eventsv1.EventList
	f.must(hub.List(ctx, &list, client.InNamespace(f.ns)))
	var out []string
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}
