package nodeoperation

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// mirrorPodAnnotation marks a static pod's mirror on the API server.
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// defaultDrainTimeout is the schema's default, for an object read without it.
const defaultDrainTimeout = 5 * time.Minute

// drainPoll is the pace at which a drain re-lists the node's pods while it
// waits for terminating ones to go.
const drainPoll = time.Second

// nodeRecheck is how often a waiting drain reads its node again, to see
// whether it is still Ready.
const nodeRecheck = 5 * time.Second

// notReadyDeleteWait is, when drain.skipWaitForDeleteTimeout is unset, how
// long past its deletionTimestamp a pod on a node that is not Ready is
// still waited for: no kubelet there confirms the deletion, so the pod
// would stay Terminating until the timeout. A variable for tests.
var notReadyDeleteWait atomic.Int64

func init() { notReadyDeleteWait.Store(int64(time.Minute)) }

// drainPlan sorts a node's pods as kubectl drain does.
type drainPlan struct {
	evict []corev1.Pod
	// terminating pods have a deletionTimestamp: the drain waits until
	// they are gone, that is deleted or replaced by a pod of the same name
	// with another UID (which, if it is on the node, is a pod of its own),
	// but for those skipWait lets go (see split).
	terminating []corev1.Pod
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
			p.terminating = append(p.terminating, pod)
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

// split sorts the terminating pods into those to wait for and those not
// waited for: their deletionTimestamp is more than skipAfter before now
// (skipAfter 0: every pod is waited for).
func (p drainPlan) split(skipAfter time.Duration, now time.Time) (wait, skipped []corev1.Pod) {
	for _, pod := range p.terminating {
		if skipAfter > 0 && now.Sub(pod.DeletionTimestamp.Time) > skipAfter {
			skipped = append(skipped, pod)
		} else {
			wait = append(wait, pod)
		}
	}
	return wait, skipped
}

// podNames are the pods' namespace/name.
func podNames(pods []corev1.Pod) []string {
	names := make([]string, 0, len(pods))
	for _, p := range pods {
		names = append(names, p.Namespace+"/"+p.Name)
	}
	return names
}

// nodeReady says the node's Ready condition is True.
func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// skipWait is how long past its deletionTimestamp a terminating pod is
// still waited for on a node that is (or is not) Ready, 0 for ever, and
// how a message names the pods not waited for.
func skipWait(opts fleetv1.DrainOptions, ready bool) (time.Duration, string) {
	if opts.SkipWaitForDeleteTimeout != nil {
		d := opts.SkipWaitForDeleteTimeout.Duration
		return d, fmt.Sprintf("deleted more than skipWaitForDeleteTimeout (%s) ago", d)
	}
	if ready {
		return 0, ""
	}
	return time.Duration(notReadyDeleteWait.Load()), "on a NotReady node"
}

// podCount counts pods for a message: "1 pod", "2 pods".
func podCount(n int) string {
	if n == 1 {
		return "1 pod"
	}
	return fmt.Sprintf("%d pods", n)
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
// the node then fails naming the pods and budgets that held. Once nothing
// is left to evict, the drain waits, polling, until every terminating pod
// on the node is gone (as kubectl drain waits for the deletions), but for
// those skipWait lets go; at the timeout the node fails naming the pods
// still terminating. Every pass re-lists the node's pods, so a drain that
// was interrupted resumes with what is left, and waits for what it evicted
// before.
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
	// evicted are the pods this run evicted, by UID; earlier counts the
	// pods terminating when the drain first looked (evicted before a
	// restart, or by someone else).
	evicted := map[types.UID]bool{}
	earlier := -1
	// ready is whether the node was Ready when last read, at readAt.
	var ready bool
	var readAt time.Time
	backoff := 250 * time.Millisecond
	for {
		pods, err := a.nodePods(ctx, node)
		if err != nil {
			return memberFailure(err, "listing the pods of node "+node, node)
		}
		plan := planDrain(pods, opts)
		if earlier < 0 {
			earlier = len(plan.terminating)
		}
		if len(plan.blocked) > 0 {
			return failed(fleetv1.ReasonDrainBlocked, "%s", plan.blockedMessage())
		}
		if a.spec.DryRun {
			names := podNames(plan.evict)
			return dryRun("would cordon and evict %d pods (%s), leave %d DaemonSet pods", len(names), listOf(names), plan.daemonSet)
		}
		if len(plan.evict) == 0 {
			var wait, skipped []corev1.Pod
			var skipWhy string
			if len(plan.terminating) > 0 {
				if opts.SkipWaitForDeleteTimeout == nil && time.Since(readAt) >= nodeRecheck {
					n, err := a.getNode(ctx, node)
					if err != nil {
						return memberFailure(err, "getting node "+node, node)
					}
					ready, readAt = nodeReady(n), time.Now()
				}
				var skipAfter time.Duration
				skipAfter, skipWhy = skipWait(opts, ready)
				wait, skipped = plan.split(skipAfter, time.Now())
			}
			if len(wait) == 0 {
				return drained(plan, skipped, evicted, earlier, skipWhy)
			}
			names := listOf(podNames(wait))
			if time.Now().After(deadline) {
				return failed(fleetv1.ReasonPodsStillTerminating, "%s still terminating after %s: %s; %d pods evicted",
					podCount(len(wait)), timeout, names, len(evicted))
			}
			a.report(node, fmt.Sprintf("waiting for %s to terminate (%d evicted): %s", podCount(len(wait)), len(evicted), names))
			select {
			case <-ctx.Done():
				return failed(fleetv1.ReasonMemberError, "stopped")
			case <-time.After(drainPoll):
			}
			continue
		}
		var held []corev1.Pod
		for _, pod := range plan.evict {
			err := a.evict(ctx, pod, opts.GracePeriodSeconds)
			switch {
			case err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err):
				// Gone, or replaced by another pod of the same name,
				// which the next pass sees.
				if err == nil {
					evicted[pod.UID] = true
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
			return failed(fleetv1.ReasonDisruptionBudget, "%s", a.heldMessage(ctx, held, timeout, len(evicted)))
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

// drained is the result of a drain with nothing left to evict or wait
// for. The pods not waited for (skipped, skipWhy) are counted apart from
// those gone.
func drained(plan drainPlan, skipped []corev1.Pod, evicted map[types.UID]bool, earlier int, skipWhy string) outcome {
	gone := len(evicted)
	for _, p := range skipped {
		if evicted[p.UID] {
			gone--
		} else {
			earlier--
		}
	}
	msg := fmt.Sprintf("drained: %d pods evicted and gone, %d already terminating, %d DaemonSet pods left", gone, max(earlier, 0), plan.daemonSet)
	if len(skipped) > 0 {
		msg += fmt.Sprintf(", %s %s not waited for", strings.Replace(podCount(len(skipped)), "pod", "terminating pod", 1), skipWhy)
	}
	return succeeded(fleetv1.ReasonDrained, "%s", msg)
}

// report shows how the node's step is going, while it runs.
func (a *actor) report(node, msg string) {
	if a.progress != nil {
		a.progress(node, msg)
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
