package sidecar_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
)

func cordonOperation(ns, name string, clusters, nodes []string) *fleetv1.NodeOperation {
	return &fleetv1.NodeOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: fleetv1.NodeOperationSpec{
			Clusters: fleetv1.ClusterTargets{Names: clusters},
			Nodes:    fleetv1.NodeTargets{Names: nodes},
			Action:   fleetv1.ActionCordon,
		},
	}
}

// setOperationStatus writes an operation's status as the operator would.
func setOperationStatus(t *testing.T, op *fleetv1.NodeOperation, phase string, results ...fleetv1.NodeResult) {
	t.Helper()
	op.Status.Phase = phase
	op.Status.ObservedGeneration = op.Generation
	op.Status.Results = results
	op.Status.Counts = fleetv1.NodeOperationCounts{Total: int32(len(results))}
	for _, r := range results {
		switch r.Phase {
		case fleetv1.OperationPending:
			op.Status.Counts.Pending++
		case fleetv1.OperationRunning:
			op.Status.Counts.Running++
		case fleetv1.OperationSucceeded:
			op.Status.Counts.Succeeded++
		case fleetv1.OperationFailed:
			op.Status.Counts.Failed++
		case fleetv1.OperationSkipped:
			op.Status.Counts.Skipped++
		}
	}
	if err := hub.Status().Update(ctx, op); err != nil {
		t.Fatal(err)
	}
}

// operationOf reads the NodeOperation an event carries.
func operationOf(t *testing.T, e event) *fleetv1.NodeOperation {
	t.Helper()
	op := &fleetv1.NodeOperation{}
	if err := json.Unmarshal(e.Raw.Event.Object, op); err != nil {
		t.Fatal(err)
	}
	return op
}

// NodeOperations are the third kind: the current ones as ADDED, the
// bookmark, then each status change as MODIFIED, under the same RBAC
// (watch nodeoperations in the namespace).
func TestNodeOperationsStreamed(t *testing.T) {
	ns := aliceNamespace
	before := cordonOperation(ns, "stream-before", []string{"c1"}, []string{"n1"})
	mustCreate(t, before)
	ts := startSidecar(t, sidecar.Options{})
	c := dial(t, ts, aliceToken, viaHeader)

	c.send(`{"type":"subscribe","id":"ops","kind":"NodeOperation","namespace":"team-a"}`)
	var initial []string
	for _, e := range c.untilBookmark("ops") {
		if e.Type == protocol.Added && (e.Name == "stream-before" || e.Name == "stream-after") {
			initial = append(initial, e.String())
		}
	}
	if !slices.Equal(initial, []string{"ops ADDED stream-before"}) {
		t.Fatalf("initial state: %v", initial)
	}

	op := cordonOperation(ns, "stream-after", []string{"c1", "c2"}, []string{"n1", "n2"})
	mustCreate(t, op)
	if e := c.mustNext(); e.String() != "ops ADDED stream-after" || e.RV == "" {
		t.Fatalf("got %v (rv %q), want ADDED stream-after with a resume point", e, e.RV)
	}
	now := metav1.Now()
	setOperationStatus(t, op, fleetv1.OperationRunning,
		fleetv1.NodeResult{Cluster: "c1", Node: "n1", Phase: fleetv1.OperationSucceeded, StartTime: &now, CompletionTime: &now},
		fleetv1.NodeResult{Cluster: "c2", Node: "n2", Phase: fleetv1.OperationRunning, StartTime: &now})
	e := c.mustNext()
	if got := operationOf(t, e); e.String() != "ops MODIFIED stream-after" || got.Status.Phase != fleetv1.OperationRunning || got.Status.Counts.Succeeded != 1 || len(got.Status.Results) != 2 {
		t.Fatalf("got %v %+v, want MODIFIED Running with one success", e, got.Status)
	}
	setOperationStatus(t, op, fleetv1.OperationSucceeded,
		fleetv1.NodeResult{Cluster: "c1", Node: "n1", Phase: fleetv1.OperationSucceeded},
		fleetv1.NodeResult{Cluster: "c2", Node: "n2", Phase: fleetv1.OperationSucceeded})
	e = c.mustNext()
	if got := operationOf(t, e); got.Status.Phase != fleetv1.OperationSucceeded || got.Status.Counts.Succeeded != 2 {
		t.Fatalf("got %v %+v, want MODIFIED Succeeded", e, got.Status)
	}
	if err := hub.Delete(ctx, op); err != nil {
		t.Fatal(err)
	}
	if e := c.mustNext(); e.String() != "ops DELETED stream-after" {
		t.Fatalf("got %v, want DELETED", e)
	}

	// Same RBAC as the other kinds: alice may not watch team-b's.
	c.send(`{"type":"subscribe","id":"other","kind":"NodeOperation","namespace":"team-b"}`)
	if e := c.mustNext(); e.Type != protocol.Error || e.Code != 403 {
		t.Fatalf("team-b: %v, want a 403 ERROR", e)
	}
	// No cluster filter on operations.
	c.send(`{"type":"subscribe","id":"bycluster","kind":"NodeOperation","namespace":"team-a","clusters":["c1"]}`)
	if e := c.mustNext(); e.Type != protocol.Error || e.Code != 400 {
		t.Fatalf("cluster filter: %v, want a 400 ERROR", e)
	}
	c.quiet(200 * time.Millisecond)
}
