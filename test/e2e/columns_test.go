package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemirror/nodemirror/test/framework"
)

// TestColumnsMatchKubectl registers nodes in every state kubectl tells
// apart on a member, mirrors them, and compares `kubectl get nodes -o wide`
// on the member with `kubectl get nodesnapshots -o wide` on the hub, cell
// by cell, as printed by the project's own kubectl.
func TestColumnsMatchKubectl(t *testing.T) {
	cp := framework.StartControlPlanes(t, 1)
	dir := t.TempDir()
	bin := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	hubK := kubectl{t: t, bin: bin, kubeconfig: writeKubeconfig(t, cp.Hub, dir, "hub")}
	memberKubeconfig := writeKubeconfig(t, cp.Members[0], dir, "member")
	memberK := kubectl{t: t, bin: bin, kubeconfig: memberKubeconfig}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	member := kubernetes.NewForConfigOrDie(cp.MemberConfigs[0])
	for _, n := range columnNodes() {
		if _, err := framework.CreateNode(ctx, member, n); err != nil {
			t.Fatalf("node %s: %v", n.Name, err)
		}
	}

	runOperator(t, ctx, cp.HubConfig)
	hubK.registerCluster("cols", memberKubeconfig)

	// AGE is computed by each kubectl at print time: read both tables
	// within the same second, or read them again.
	var nodes, snaps table
	for range 5 {
		nodes = parseTable(t, memberK.must("", "get", "nodes", "-o", "wide"))
		snaps = parseTable(t, hubK.must("", "get", "nodesnapshots", "-n", "fleet", "-o", "wide"))
		if len(snaps.rows) == len(nodes.rows) && sameAges(nodes, snaps) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("member:\n%s\nhub:\n%s", nodes.text, snaps.text)
	if len(snaps.rows) != len(nodes.rows) {
		t.Fatalf("%d snapshots for %d nodes", len(snaps.rows), len(nodes.rows))
	}
	// Every kubectl column but NAME has a column of the same name on the
	// hub; the node's name is the NODE column there.
	for _, col := range nodes.header[1:] {
		if !slices.Contains(snaps.header, col) {
			t.Errorf("hub table lacks kubectl's column %s", col)
		}
	}
	for _, n := range nodes.rows {
		s, ok := snaps.find("NODE", n["NAME"])
		if !ok {
			t.Errorf("no snapshot of node %s", n["NAME"])
			continue
		}
		for _, col := range nodes.header[1:] {
			if s[col] != n[col] {
				t.Errorf("node %s, column %s: kubectl prints %q for the node, %q for its snapshot", n["NAME"], col, n[col], s[col])
			}
		}
	}
}

// columnNodes covers what kubectl prints differently: each Ready state,
// cordons, both kinds of role label, and missing addresses and node info.
func columnNodes() []*corev1.Node {
	withReady := func(n *corev1.Node, s corev1.ConditionStatus) *corev1.Node {
		for i := range n.Status.Conditions {
			if n.Status.Conditions[i].Type == corev1.NodeReady {
				n.Status.Conditions[i].Status = s
			}
		}
		return n
	}
	cordoned := func(n *corev1.Node) *corev1.Node { n.Spec.Unschedulable = true; return n }
	role := func(r string) map[string]string { return map[string]string{"node-role.kubernetes.io/" + r: ""} }

	noReady := framework.NewNode("no-ready-condition", nil)
	noReady.Status.Conditions = noReady.Status.Conditions[1:]
	bare := framework.NewNode("bare", nil)
	bare.Status.Addresses, bare.Status.NodeInfo = nil, corev1.NodeSystemInfo{}
	external := framework.NewNode("external", role("edge"))
	external.Status.Addresses = append(external.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"})
	external.Status.NodeInfo.Architecture = ""

	return []*corev1.Node{
		framework.NewNode("ready", role("control-plane")),
		withReady(framework.NewNode("not-ready", role("worker")), corev1.ConditionFalse),
		withReady(framework.NewNode("ready-unknown", nil), corev1.ConditionUnknown),
		noReady,
		cordoned(framework.NewNode("cordoned", nil)),
		cordoned(withReady(framework.NewNode("not-ready-cordoned", nil), corev1.ConditionFalse)),
		cordoned(withReady(framework.NewNode("unknown-cordoned", nil), corev1.ConditionUnknown)),
		framework.NewNode("legacy-role", map[string]string{"kubernetes.io/role": "infra"}),
		framework.NewNode("both-roles", map[string]string{"kubernetes.io/role": "infra", "node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/infra": ""}),
		framework.NewNode("empty-legacy-role", map[string]string{"kubernetes.io/role": ""}),
		bare,
		external,
	}
}

// table is kubectl's tabular output, cut at the columns' header offsets:
// cells may hold spaces ("6.1 (amd64)") or be empty (VERSION).
type table struct {
	text   string
	header []string
	rows   []map[string]string
}

var headerCell = regexp.MustCompile(`\S+`)

func parseTable(t *testing.T, out string) table {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	tb := table{text: out}
	starts := headerCell.FindAllStringIndex(lines[0], -1)
	for _, s := range starts {
		tb.header = append(tb.header, lines[0][s[0]:s[1]])
	}
	for _, line := range lines[1:] {
		row := map[string]string{}
		for i, s := range starts {
			from, to := s[0], len(line)
			if i+1 < len(starts) {
				to = starts[i+1][0]
			}
			if from > len(line) {
				from = len(line)
			}
			if to > len(line) {
				to = len(line)
			}
			row[tb.header[i]] = strings.TrimSpace(line[from:to])
		}
		tb.rows = append(tb.rows, row)
	}
	if len(tb.header) == 0 {
		t.Fatalf("no table in %q", out)
	}
	return tb
}

func (tb table) find(col, value string) (map[string]string, bool) {
	for _, r := range tb.rows {
		if r[col] == value {
			return r, true
		}
	}
	return nil, false
}

func sameAges(nodes, snaps table) bool {
	for _, n := range nodes.rows {
		if s, ok := snaps.find("NODE", n["NAME"]); !ok || s["AGE"] != n["AGE"] {
			return false
		}
	}
	return true
}
