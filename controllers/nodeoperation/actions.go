package nodeoperation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// outcome is how one node's step ended.
type outcome struct {
	phase, reason, message string
}

func succeeded(reason, format string, args ...any) outcome {
	return outcome{fleetv1.OperationSucceeded, reason, fmt.Sprintf(format, args...)}
}

func failed(reason, format string, args ...any) outcome {
	return outcome{fleetv1.OperationFailed, reason, fmt.Sprintf(format, args...)}
}

func dryRun(format string, args ...any) outcome {
	return outcome{fleetv1.OperationSkipped, fleetv1.ReasonDryRun, "dry run: " + fmt.Sprintf(format, args...)}
}

// memberRole is what a Forbidden result tells people to do.
const memberRole = "apply config/member-operations on the member cluster (ClusterRole nodemirror-member-operator, bound to the identity of the cluster's kubeconfig)"

// memberFailure turns a member error into a result. The member's own
// words are kept only for errors other than Forbidden and NotFound, and
// cut to the message limit: a member's answer is never echoed unbounded.
func memberFailure(err error, what, node string) outcome {
	switch {
	case apierrors.IsForbidden(err):
		return failed(fleetv1.ReasonForbidden, "the member forbids %s: %s", what, memberRole)
	case apierrors.IsNotFound(err):
		return failed(fleetv1.ReasonNodeNotFound, "node %s not found on the member", node)
	}
	return failed(fleetv1.ReasonMemberError, "%s: %s", what, truncate(err.Error(), fleetv1.MaxNodeOperationMessage-len(what)-2))
}

// transient says a member error may pass if the request is repeated.
func transient(err error) bool {
	var netErr net.Error
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) ||
		errors.As(err, &netErr)
}

// withRetry runs a member request up to four times while it fails transiently.
func withRetry(ctx context.Context, f func() error) error {
	delay := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || attempt == 4 || !transient(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// actor acts on one member's nodes.
type actor struct {
	cs   kubernetes.Interface
	spec *fleetv1.NodeOperationSpec
	// evictionBackoff caps the wait between evictions refused by a budget.
	evictionBackoff time.Duration
	// progress, if set, shows how a node's step is going while it runs
	// (e.g. the pods a drain still waits for).
	progress func(node, msg string)
}

func (a *actor) getNode(ctx context.Context, name string) (*corev1.Node, error) {
	var n *corev1.Node
	err := withRetry(ctx, func() (err error) {
		n, err = a.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return err
	})
	return n, err
}

func (a *actor) patchNode(ctx context.Context, name string, patch any) error {
	raw, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	return withRetry(ctx, func() error {
		_, err := a.cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, raw, metav1.PatchOptions{FieldManager: fleetv1.FieldManager})
		return err
	})
}

// act does the operation's action to one node; started is when the
// node's step first started (a drain's timeout counts from it).
func (a *actor) act(ctx context.Context, node string, started time.Time) outcome {
	switch a.spec.Action {
	case fleetv1.ActionCordon, fleetv1.ActionUncordon:
		return a.cordon(ctx, node, a.spec.Action == fleetv1.ActionCordon)
	case fleetv1.ActionLabel, fleetv1.ActionUnlabel:
		return a.label(ctx, node)
	case fleetv1.ActionTaint, fleetv1.ActionUntaint:
		return a.taint(ctx, node)
	case fleetv1.ActionDrain:
		return a.drain(ctx, node, started)
	}
	return failed("UnknownAction", "action %q is not known", a.spec.Action)
}

func (a *actor) cordon(ctx context.Context, node string, cordon bool) outcome {
	verb := "cordon"
	if !cordon {
		verb = "uncordon"
	}
	n, err := a.getNode(ctx, node)
	if err != nil {
		return memberFailure(err, "getting node "+node, node)
	}
	if n.Spec.Unschedulable == cordon {
		return succeeded(fleetv1.ReasonUnchanged, "already %sed", verb)
	}
	if a.spec.DryRun {
		return dryRun("would %s", verb)
	}
	if err := a.patchNode(ctx, node, map[string]any{"spec": map[string]any{"unschedulable": cordon}}); err != nil {
		return memberFailure(err, "patching node "+node+" to "+verb+" it", node)
	}
	return succeeded(fleetv1.ReasonChanged, "%sed", verb)
}

func (a *actor) label(ctx context.Context, node string) outcome {
	n, err := a.getNode(ctx, node)
	if err != nil {
		return memberFailure(err, "getting node "+node, node)
	}
	change := map[string]any{}
	if a.spec.Action == fleetv1.ActionLabel {
		for k, v := range a.spec.Labels {
			if old, ok := n.Labels[k]; !ok || old != v {
				change[k] = v
			}
		}
	} else {
		for _, k := range a.spec.LabelKeys {
			if _, ok := n.Labels[k]; ok {
				change[k] = nil
			}
		}
	}
	keys := strings.Join(slices.Sorted(maps.Keys(change)), ", ")
	switch {
	case len(change) == 0 && a.spec.Action == fleetv1.ActionLabel:
		return succeeded(fleetv1.ReasonUnchanged, "labels already set")
	case len(change) == 0:
		return succeeded(fleetv1.ReasonUnchanged, "labels already gone")
	case a.spec.DryRun && a.spec.Action == fleetv1.ActionLabel:
		return dryRun("would set labels %s", keys)
	case a.spec.DryRun:
		return dryRun("would remove labels %s", keys)
	}
	if err := a.patchNode(ctx, node, map[string]any{"metadata": map[string]any{"labels": change}}); err != nil {
		return memberFailure(err, "patching the labels of node "+node, node)
	}
	if a.spec.Action == fleetv1.ActionLabel {
		return succeeded(fleetv1.ReasonChanged, "set labels %s", keys)
	}
	return succeeded(fleetv1.ReasonChanged, "removed labels %s", keys)
}

// applyTaints returns the node's taints with the operation's taints added
// (or their value updated, by key and effect) or removed, and whether
// anything changed.
func applyTaints(spec *fleetv1.NodeOperationSpec, taints []corev1.Taint, now time.Time) ([]corev1.Taint, bool) {
	out := slices.Clone(taints)
	changed := false
	if spec.Action == fleetv1.ActionTaint {
		for _, want := range spec.Taints {
			i := slices.IndexFunc(out, func(t corev1.Taint) bool { return t.Key == want.Key && t.Effect == want.Effect })
			switch {
			case i < 0:
				t := corev1.Taint{Key: want.Key, Value: want.Value, Effect: want.Effect}
				if t.Effect == corev1.TaintEffectNoExecute {
					t.TimeAdded = &metav1.Time{Time: now}
				}
				out = append(out, t)
				changed = true
			case out[i].Value != want.Value:
				out[i].Value = want.Value
				changed = true
			}
		}
		return out, changed
	}
	out = slices.DeleteFunc(out, func(t corev1.Taint) bool {
		for _, k := range spec.TaintKeys {
			if t.Key == k.Key && (k.Effect == "" || t.Effect == k.Effect) {
				changed = true
				return true
			}
		}
		return false
	})
	return out, changed
}

// taint reads the node, computes its taints and updates it with the
// resourceVersion read, again on a conflict (a bounded number of times).
func (a *actor) taint(ctx context.Context, node string) outcome {
	var res outcome
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := a.getNode(ctx, node)
		if err != nil {
			return err
		}
		taints, changed := applyTaints(a.spec, n.Spec.Taints, time.Now())
		switch {
		case !changed && a.spec.Action == fleetv1.ActionTaint:
			res = succeeded(fleetv1.ReasonUnchanged, "taints already set")
			return nil
		case !changed:
			res = succeeded(fleetv1.ReasonUnchanged, "taints already gone")
			return nil
		case a.spec.DryRun:
			res = dryRun("would %s the node (%d taints before, %d after)", a.spec.Action, len(n.Spec.Taints), len(taints))
			return nil
		}
		n.Spec.Taints = taints
		if _, err := a.cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{FieldManager: fleetv1.FieldManager}); err != nil {
			return err
		}
		res = succeeded(fleetv1.ReasonChanged, "%sed: %d taints now", a.spec.Action, len(taints))
		return nil
	})
	if err != nil {
		return memberFailure(err, "updating the taints of node "+node, node)
	}
	return res
}
