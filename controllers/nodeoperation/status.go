package nodeoperation

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// resultKey identifies a node's result.
type resultKey struct{ cluster, node string }

func keyOf(r *fleetv1.NodeResult) resultKey { return resultKey{r.Cluster, r.Node} }

// terminal says a result's phase is final: it is not redone.
func terminal(phase string) bool {
	return phase == fleetv1.OperationSucceeded || phase == fleetv1.OperationFailed || phase == fleetv1.OperationSkipped
}

// truncate cuts s to at most n bytes of valid UTF-8, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}

// rank orders results for trimming: what needs attention is kept first.
func rank(phase string) int {
	switch phase {
	case fleetv1.OperationFailed:
		return 0
	case fleetv1.OperationRunning:
		return 1
	case fleetv1.OperationPending:
		return 2
	case fleetv1.OperationSkipped:
		return 3
	}
	return 4
}

// countResults counts results by phase.
func countResults(results []fleetv1.NodeResult) fleetv1.NodeOperationCounts {
	var c fleetv1.NodeOperationCounts
	for i := range results {
		c.Total++
		switch results[i].Phase {
		case fleetv1.OperationPending:
			c.Pending++
		case fleetv1.OperationRunning:
			c.Running++
		case fleetv1.OperationSucceeded:
			c.Succeeded++
		case fleetv1.OperationFailed:
			c.Failed++
		case fleetv1.OperationSkipped:
			c.Skipped++
		}
	}
	return c
}

// trimResults keeps at most max results: Failed, Running, Pending and
// Skipped ones before Succeeded ones, each group by cluster and node; the
// kept ones come back ordered by cluster and node, with the number left
// out. results is reordered.
func trimResults(results []fleetv1.NodeResult, max int) ([]fleetv1.NodeResult, int32) {
	byName := func(a, b fleetv1.NodeResult) int {
		return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Node, b.Node))
	}
	omitted := 0
	if len(results) > max {
		slices.SortFunc(results, func(a, b fleetv1.NodeResult) int {
			return cmp.Or(cmp.Compare(rank(a.Phase), rank(b.Phase)), byName(a, b))
		})
		omitted = len(results) - max
		results = results[:max]
	}
	slices.SortFunc(results, byName)
	return results, int32(omitted)
}

// operationPhase is the phase of an operation whose results are these,
// once every step has ended (done) or while some still run.
func operationPhase(c fleetv1.NodeOperationCounts, done bool) string {
	switch {
	case !done:
		return fleetv1.OperationRunning
	case c.Failed > 0:
		return fleetv1.OperationFailed
	}
	return fleetv1.OperationSucceeded
}

// setConditions sets Ready, Reconciling and Stalled from the phase, as
// kstatus reads them: InProgress while Pending or Running, Current once
// Succeeded, Failed once Failed.
func setConditions(st *fleetv1.NodeOperationStatus, generation int64) {
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: generation})
	}
	c := st.Counts
	progress := fmt.Sprintf("%d of %d nodes done: %d succeeded, %d failed, %d skipped", c.Succeeded+c.Failed+c.Skipped, c.Total, c.Succeeded, c.Failed, c.Skipped)
	switch st.Phase {
	case fleetv1.OperationSucceeded:
		set(fleetv1.ConditionReady, metav1.ConditionTrue, fleetv1.OperationSucceeded, progress)
		set(fleetv1.ConditionReconciling, metav1.ConditionFalse, fleetv1.OperationSucceeded, "finished")
		set(fleetv1.ConditionStalled, metav1.ConditionFalse, fleetv1.OperationSucceeded, "finished")
	case fleetv1.OperationFailed:
		set(fleetv1.ConditionReady, metav1.ConditionFalse, fleetv1.OperationFailed, progress)
		set(fleetv1.ConditionReconciling, metav1.ConditionFalse, fleetv1.OperationFailed, "finished")
		set(fleetv1.ConditionStalled, metav1.ConditionTrue, fleetv1.OperationFailed, progress+"; see status.results")
	default:
		reason := fleetv1.OperationRunning
		if st.Phase == fleetv1.OperationPending {
			reason, progress = fleetv1.OperationPending, "resolving targets"
		}
		set(fleetv1.ConditionReady, metav1.ConditionFalse, reason, progress)
		set(fleetv1.ConditionReconciling, metav1.ConditionTrue, reason, progress)
		set(fleetv1.ConditionStalled, metav1.ConditionFalse, reason, "in progress")
	}
}

// buildStatus is the status of an operation with these results (all of
// them, in any order; they are reordered).
func buildStatus(prev fleetv1.NodeOperationStatus, generation int64, results []fleetv1.NodeResult, targets string, done bool, now time.Time) fleetv1.NodeOperationStatus {
	st := fleetv1.NodeOperationStatus{
		ObservedGeneration: generation,
		Targets:            truncate(targets, 128),
		StartTime:          prev.StartTime,
		Conditions:         slices.Clone(prev.Conditions),
	}
	if st.StartTime == nil {
		st.StartTime = &metav1.Time{Time: now.Truncate(time.Second)}
	}
	st.Counts = countResults(results)
	st.Phase = operationPhase(st.Counts, done)
	if done {
		st.CompletionTime = &metav1.Time{Time: now.Truncate(time.Second)}
	}
	st.Results, st.OmittedResults = trimResults(results, fleetv1.MaxNodeOperationResults)
	setConditions(&st, generation)
	return st
}

// tracker holds a run's results and writes them, batched, as status.
type tracker struct {
	r  *Reconciler
	op *fleetv1.NodeOperation

	mu      sync.Mutex
	results map[resultKey]*fleetv1.NodeResult
	prev    fleetv1.NodeOperationStatus
	targets string
	done    bool
	// version counts changes, written is the version last written.
	version, written int
	failedEvents     int

	flushMu sync.Mutex
}

// maxNodeFailedEvents bounds the NodeFailed Events of one run.
const maxNodeFailedEvents = 10

func newTracker(r *Reconciler, op *fleetv1.NodeOperation) *tracker {
	t := &tracker{r: r, op: op, results: map[resultKey]*fleetv1.NodeResult{}, prev: *op.Status.DeepCopy(), targets: op.Status.Targets}
	for i := range op.Status.Results {
		res := op.Status.Results[i]
		t.results[keyOf(&res)] = &res
	}
	return t
}

// pending writes phase Pending, once, before the targets are resolved.
func (t *tracker) pending() {
	st := fleetv1.NodeOperationStatus{ObservedGeneration: t.op.Generation, Phase: fleetv1.OperationPending, StartTime: &metav1.Time{Time: time.Now().Truncate(time.Second)}}
	setConditions(&st, t.op.Generation)
	if err := t.r.patchStatus(t.r.base, t.op, st); err == nil {
		t.prev = st
	}
}

// setTargets adds a Pending result for every target without one, and the
// final result of every target that cannot be acted on at all.
func (t *tracker) setTargets(targets []clusterTarget) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := &metav1.Time{Time: time.Now().Truncate(time.Second)}
	add := func(cluster, node, phase, reason, msg string) {
		k := resultKey{cluster, node}
		if _, ok := t.results[k]; ok {
			return
		}
		res := &fleetv1.NodeResult{Cluster: cluster, Node: node, Phase: phase, Reason: reason, Message: truncate(msg, fleetv1.MaxNodeOperationMessage)}
		if terminal(phase) {
			res.StartTime, res.CompletionTime = now, now
		}
		t.results[k] = res
	}
	for _, ct := range targets {
		for _, n := range ct.nodes {
			add(ct.name, n, fleetv1.OperationPending, "", "")
		}
		for _, n := range ct.notMirrored {
			if ct.missing {
				add(ct.name, n, fleetv1.OperationFailed, fleetv1.ReasonClusterNotFound, fmt.Sprintf("no ManagedCluster %s in namespace %s", ct.name, t.op.Namespace))
			} else {
				add(ct.name, n, fleetv1.OperationFailed, fleetv1.ReasonNodeNotFound, fmt.Sprintf("cluster %s mirrors no node %s (no NodeSnapshot: not on the member, or outside the cluster's spec.nodeSelector)", ct.name, n))
			}
		}
		if ct.missing && len(ct.notMirrored) == 0 {
			add(ct.name, AnyNode, fleetv1.OperationFailed, fleetv1.ReasonClusterNotFound, fmt.Sprintf("no ManagedCluster %s in namespace %s", ct.name, t.op.Namespace))
		}
	}
	t.targets = describe(targets)
	t.version++
}

// todoItem is a node still to act on, and when its step first started.
type todoItem struct {
	node    string
	started *metav1.Time
}

func (t *tracker) todo(cluster string, nodes []string) []todoItem {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []todoItem
	for _, n := range nodes {
		if res := t.results[resultKey{cluster, n}]; res != nil && !terminal(res.Phase) {
			out = append(out, todoItem{node: n, started: res.StartTime})
		}
	}
	return out
}

// begin marks a node Running and returns when its step first started.
func (t *tracker) begin(cluster, node string, started *metav1.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.results[resultKey{cluster, node}]
	if started == nil {
		started = &metav1.Time{Time: time.Now().Truncate(time.Second)}
	}
	// A message is a running step's progress, or a result's: it starts afresh.
	res.Phase, res.Reason, res.Message, res.StartTime = fleetv1.OperationRunning, "", "", started
	t.version++
	return started.Time
}

// progress sets the message of a node's running step; written with the
// next batch, and only if it changed.
func (t *tracker) progress(cluster, node, msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.results[resultKey{cluster, node}]
	msg = truncate(msg, fleetv1.MaxNodeOperationMessage)
	if res == nil || res.Phase != fleetv1.OperationRunning || res.Message == msg {
		return
	}
	res.Message = msg
	t.version++
}

func (t *tracker) end(cluster, node string, o outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := t.results[resultKey{cluster, node}]
	now := &metav1.Time{Time: time.Now().Truncate(time.Second)}
	res.Phase, res.Reason, res.Message, res.CompletionTime = o.phase, truncate(o.reason, 64), truncate(o.message, fleetv1.MaxNodeOperationMessage), now
	if res.StartTime == nil {
		res.StartTime = now
	}
	t.version++
	if o.phase == fleetv1.OperationFailed {
		t.failedEvents++
		switch {
		case t.failedEvents <= maxNodeFailedEvents:
			t.r.event(t.op, "Warning", "NodeFailed", "Act", "%s/%s: %s: %s", cluster, node, res.Reason, res.Message)
		case t.failedEvents == maxNodeFailedEvents+1:
			t.r.event(t.op, "Warning", "NodeFailed", "Act", "more nodes failed: see status.results")
		}
	}
}

// finish marks the run done and returns its final status.
func (t *tracker) finish() fleetv1.NodeOperationStatus {
	t.mu.Lock()
	t.done = true
	t.version++
	t.mu.Unlock()
	st, _ := t.build()
	return st
}

func (t *tracker) build() (fleetv1.NodeOperationStatus, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	results := make([]fleetv1.NodeResult, 0, len(t.results))
	for _, res := range t.results {
		results = append(results, *res)
	}
	st := buildStatus(t.prev, t.op.Generation, results, t.targets, t.done, time.Now())
	return st, t.version
}

// flush writes the status if anything changed since the last write; false
// when the write failed.
func (t *tracker) flush(ctx context.Context) bool {
	t.flushMu.Lock()
	defer t.flushMu.Unlock()
	t.mu.Lock()
	clean := t.version == t.written
	t.mu.Unlock()
	if clean {
		return true
	}
	st, v := t.build()
	if err := t.r.patchStatus(ctx, t.op, st); err != nil {
		if ctx.Err() == nil {
			ctrl.Log.WithName("nodeoperation").Error(err, "Cannot write status", "NodeOperation", client.ObjectKeyFromObject(t.op))
		}
		return false
	}
	t.mu.Lock()
	t.written, t.prev = v, st
	t.mu.Unlock()
	return true
}

// flushEvery writes the status every interval while it changes; the
// returned function stops it.
func (t *tracker) flushEvery(ctx context.Context, interval time.Duration) func() {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				t.flush(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}
