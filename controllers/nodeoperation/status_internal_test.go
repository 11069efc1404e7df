package nodeoperation

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// TestResultsTrimmedFor5000Nodes: an operation over 5,000 nodes keeps
// 1,000 results, those not succeeded first, exact counts, and a status
// far below an object's size limit even with every message at its limit.
func TestResultsTrimmedFor5000Nodes(t *testing.T) {
	const nodes = 5000
	now := time.Now()
	ts := &metav1.Time{Time: now.Truncate(time.Second)}
	long := strings.Repeat("é", 400) // 800 bytes: cut to the limit
	results := make([]fleetv1.NodeResult, 0, nodes)
	for i := range nodes {
		r := fleetv1.NodeResult{
			Cluster: fmt.Sprintf("cluster-%02d", i%50), Node: fmt.Sprintf("ip-10-0-%d-%d.eu-west-1.compute.internal", i/250, i%250),
			Phase: fleetv1.OperationSucceeded, Reason: fleetv1.ReasonDrained, StartTime: ts, CompletionTime: ts,
		}
		switch {
		case i%10 == 0:
			r.Phase, r.Reason = fleetv1.OperationFailed, fleetv1.ReasonDisruptionBudget
		case i%10 == 1:
			r.Phase, r.Reason, r.CompletionTime = fleetv1.OperationRunning, "", nil
		case i%25 == 2:
			r.Phase, r.Reason = fleetv1.OperationSkipped, fleetv1.ReasonClusterPaused
		}
		r.Message = truncate(long, fleetv1.MaxNodeOperationMessage)
		results = append(results, r)
	}
	st := buildStatus(fleetv1.NodeOperationStatus{}, 1, results, "50 clusters, 5000 nodes", false, now)
	if st.Counts != (fleetv1.NodeOperationCounts{Total: 5000, Running: 500, Failed: 500, Skipped: 200, Succeeded: 3800}) {
		t.Errorf("counts %+v", st.Counts)
	}
	if len(st.Results) != fleetv1.MaxNodeOperationResults || st.OmittedResults != 4000 {
		t.Fatalf("%d results, %d omitted", len(st.Results), st.OmittedResults)
	}
	by := map[string]int{}
	for i, r := range st.Results {
		by[r.Phase]++
		if len(r.Message) > fleetv1.MaxNodeOperationMessage {
			t.Fatalf("message of %d bytes", len(r.Message))
		}
		if i > 0 && (st.Results[i-1].Cluster > r.Cluster || st.Results[i-1].Cluster == r.Cluster && st.Results[i-1].Node >= r.Node) {
			t.Fatalf("results not ordered by cluster and node at %d", i)
		}
	}
	if by[fleetv1.OperationFailed] != 500 || by[fleetv1.OperationRunning] != 500 || by[fleetv1.OperationSucceeded] != 0 {
		t.Errorf("kept %v, want the 500 failed and 500 running", by)
	}
	raw, err := json.Marshal(&fleetv1.NodeOperation{Status: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status of an operation over %d nodes, every message at its %d-byte limit: %d bytes (%.2f MiB)", nodes, fleetv1.MaxNodeOperationMessage, len(raw), float64(len(raw))/(1<<20))
	if len(raw) > 1<<20 {
		t.Errorf("status is %d bytes, want under 1 MiB", len(raw))
	}
	setConditions(&st, 1)
	if st.Phase != fleetv1.OperationRunning {
		t.Errorf("phase %s", st.Phase)
	}
	if done := buildStatus(st, 1, results, "", true, now); done.Phase != fleetv1.OperationFailed || done.CompletionTime == nil {
		t.Errorf("finished with failures: %s", done.Phase)
	}
}

func TestApplyTaints(t *testing.T) {
	spec := &fleetv1.NodeOperationSpec{Action: fleetv1.ActionTaint, Taints: []fleetv1.NodeTaint{{Key: "k", Value: "v2", Effect: "NoSchedule"}, {Key: "k", Effect: "NoExecute"}}}
	have := []corev1.Taint{{Key: "k", Value: "v1", Effect: "NoSchedule"}, {Key: "other", Effect: "NoSchedule"}}
	out, changed := applyTaints(spec, have, time.Now())
	if !changed || len(out) != 3 || out[0].Value != "v2" || out[2].TimeAdded == nil {
		t.Errorf("taint: %v %+v", changed, out)
	}
	if _, changed := applyTaints(spec, out, time.Now()); changed {
		t.Errorf("tainting again changed the node")
	}
	spec = &fleetv1.NodeOperationSpec{Action: fleetv1.ActionUntaint, TaintKeys: []fleetv1.TaintKey{{Key: "k", Effect: "NoExecute"}}}
	out, changed = applyTaints(spec, out, time.Now())
	if !changed || len(out) != 2 || have[0].Value != "v1" {
		t.Errorf("untaint one effect: %+v", out)
	}
	spec.TaintKeys = []fleetv1.TaintKey{{Key: "k"}}
	if out, _ = applyTaints(spec, out, time.Now()); len(out) != 1 || out[0].Key != "other" {
		t.Errorf("untaint every effect: %+v", out)
	}
}
