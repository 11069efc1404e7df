package nodeoperation

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// mirrorPodAnnotation marks a static pod's mirror on the API server.
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// defaultDrainTimeout is the schema's default, for an object read without it.
const defaultDrainTimeout = 5 * time.Minute

// drainPlan sorts a node's pods as kubectl drain does.
type drainPlan struct {
	evict []corev1.Pod
	// leaving pods have a deletionTimestamp: they count as gone (on a
	// real cluster the kubelet ends them within their grace period).
	leaving int
	// daemonSet pods are left in place (ignoreDaemonSets).
	daemonSet int
	// blocked names the pods that stop the drain, by cause.
	blocked map[string][]string
}

func planDrain(pods []corev1.Pod, opts fleetv1.DrainOptions) drainPlan {
	p := drainPlan{blocked: map[string][]string{}}
	for _, pod := range pods {
		name := pod.Namespace + "/" + pod.Name
		switch {
		case pod.Annotations[mirrorPodAnnotation] != "":
			continue
		case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
			continue
		case pod.DeletionTimestamp != nil:
			p.leaving++
			continue
		}
		ctl := metav1.GetControllerOf(&pod)
		if ctl != nil && ctl.Kind == "DaemonSet" {
			if opts.IgnoreDaemonSets {
				p.daemonSet++
			} else {
				p.blocked["DaemonSet-managed (set drain.ignoreDaemonSets)"] = append(p.blocked["DaemonSet-managed (set drain.ignoreDaemonSets)"], name)
			}
			continue
		}
		ok := true
		if ctl == nil && !opts.Force {
			p.blocked["not managed by a controller (set drain.force)"] = append(p.blocked["not managed by a controller (set drain.force)"], name)
			ok = false
		}
		if !opts.DeleteEmptyDirData && slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.EmptyDir != nil }) {
			p.blocked["with emptyDir data (set drain.deleteEmptyDirData)"] = append(p.blocked["with emptyDir data (set drain.deleteEmptyDirData)"], name)
			ok = false
		}
		if ok {
			p.evict = append(p.evict, pod)
		}
	}
	return p
}

// listOf names pods for a message, at most ten of them.
func listOf(names []string) string {
	slices.Sort(names)
	if len(names) > 10 {
		return strings.Join(names[:10], ", ") + fmt.Sprintf(" and %d more", len(names)-10)
	}
	return strings.Join(names, ", ")
}

func (p drainPlan) blockedMessage() string {
	var parts []string
	for _, cause := range slices.Sorted(func(yield func(string) bool) {
		for k := range p.blocked {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("pods %s: %s", cause, listOf(p.blocked[cause])))
	}
	return "cannot drain: " + strings.Join(parts, "; ")
}

func (a *actor) nodePods(ctx context.Context, node string) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	opts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(), Limit: 500}
	for {
		var list *corev1.PodList
		err := withRetry(ctx, func() (err error) {
			list, err = a.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
			return err
		})
		if err != nil {
			return nil, err
		}
		pods = append(pods, list.Items...)
		if list.Continue == "" {
			return pods, nil
		}
		opts.Continue = list.Continue
	}
}

// drain cordons the node and evicts its pods through the Eviction API,
// never deleting one. Evictions a PodDisruptionBudget refuses (429) are
// retried with backoff until the drain's timeout, counted from started;
// the node then fails naming the pods and budgets that held. Every pass
// re-lists the node's pods, so a drain that was interrupted resumes with
// what is left.
func (a *actor) drain(ctx context.Context, node string, started time.Time) outcome {
	opts := fleetv1.DrainOptions{}
	if a.spec.Drain != nil {
		opts = *a.spec.Drain
	}
	timeout := defaultDrainTimeout
	if opts.Timeout != nil {
		timeout = opts.Timeout.Duration
	}
	deadline := started.Add(timeout)
	if a.spec.DryRun {
		if _, err := a.getNode(ctx, node); err != nil {
			return memberFailure(err, "getting node "+node, node)
		}
	} else if res := a.cordon(ctx, node, true); res.phase != fleetv1.OperationSucceeded {
		return res
	}
	evicted, earlier := 0, -1
	backoff := 250 * time.Millisecond
	for {
		pods, err := a.nodePods(ctx, node)
		if err != nil {
			return memberFailure(err, "listing the pods of node "+node, node)
		}
		plan := planDrain(pods, opts)
		if earlier < 0 {
			// Evicted before a restart, or by someone else.
			earlier = plan.leaving
		}
		if len(plan.blocked) > 0 {
			return failed(fleetv1.ReasonDrainBlocked, "%s", plan.blockedMessage())
		}
		if a.spec.DryRun {
			var names []string
			for _, p := range plan.evict {
				names = append(names, p.Namespace+"/"+p.Name)
			}
			return dryRun("would cordon and evict %d pods (%s), leave %d DaemonSet pods", len(names), listOf(names), plan.daemonSet)
		}
		if len(plan.evict) == 0 {
			return succeeded(fleetv1.ReasonDrained, "drained: %d pods evicted, %d already terminating, %d DaemonSet pods left", evicted, earlier, plan.daemonSet)
		}
		var held []corev1.Pod
		for _, pod := range plan.evict {
			err := a.evict(ctx, pod, opts.GracePeriodSeconds)
			switch {
			case err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err):
				// Gone, or replaced by another pod of the same name,
				// which the next pass sees.
				if err == nil {
					evicted++
				}
			case apierrors.IsTooManyRequests(err):
				held = append(held, pod)
			case ctx.Err() != nil:
				return failed(fleetv1.ReasonMemberError, "stopped")
			case apierrors.IsForbidden(err):
				return memberFailure(err, "evicting pods (pods/eviction create)", node)
			default:
				held = append(held, pod)
			}
		}
		if len(held) > 0 && time.Now().After(deadline) {
			return failed(fleetv1.ReasonDisruptionBudget, "%s", a.heldMessage(ctx, held, timeout, evicted))
		}
		if len(held) == 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return failed(fleetv1.ReasonMemberError, "stopped")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, a.evictionBackoff)
	}
}

func (a *actor) evict(ctx context.Context, pod corev1.Pod, grace *int64) error {
	uid := pod.UID
	return a.cs.PolicyV1().Evictions(pod.Namespace).Evict(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: grace, Preconditions: &metav1.Preconditions{UID: &uid}},
	})
}

// heldMessage names the pods whose eviction was refused until the timeout
// and the PodDisruptionBudgets that select them.
func (a *actor) heldMessage(ctx context.Context, held []corev1.Pod, timeout time.Duration, evicted int) string {
	budgets := map[string][]policyv1.PodDisruptionBudget{}
	var parts []string
	for _, pod := range held {
		pdbs, ok := budgets[pod.Namespace]
		if !ok {
			if list, err := a.cs.PolicyV1().PodDisruptionBudgets(pod.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
				pdbs = list.Items
			}
			budgets[pod.Namespace] = pdbs
		}
		var names []string
		for _, pdb := range pdbs {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
				continue
			}
			names = append(names, "PodDisruptionBudget "+pdb.Namespace+"/"+pdb.Name)
		}
		by := "no PodDisruptionBudget found"
		if len(names) > 0 {
			by = strings.Join(names, ", ")
		}
		parts = append(parts, fmt.Sprintf("pod %s/%s (%s)", pod.Namespace, pod.Name, by))
		if len(parts) == 10 && len(held) > 10 {
			parts = append(parts, fmt.Sprintf("and %d more pods", len(held)-10))
			break
		}
	}
	return fmt.Sprintf("evictions still refused after %s: %s; %d pods evicted", timeout, strings.Join(parts, "; "), evicted)
}
