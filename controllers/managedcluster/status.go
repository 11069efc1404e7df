package managedcluster

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
	"github.com/nodemirror/nodemirror/internal/session"
)

// observation is what one reconcile learned; setStatus turns it into status.
// Exactly one of paused, refusal and session is set, or none when the
// reconcile failed before it learned anything.
type observation struct {
	paused  bool
	refusal *member.Refusal
	session *session.Status
	// credential comes with session: the kubeconfig's credential.
	credential fleetv1.MemberCredential
}

// stalledReasons need a change by a human: retrying alone cannot fix them.
var stalledReasons = map[string]bool{
	fleetv1.ReasonForbidden:            true,
	fleetv1.ReasonUnauthorized:         true,
	fleetv1.ReasonCertificateUntrusted: true,
	fleetv1.ReasonAddressDenied:        true,
}

// maxMessage bounds a condition message: whatever a member or a Secret
// puts into one, a status patch never fails on the schema's maxLength and
// never carries more than this.
const maxMessage = 1024

// setStatus sets observedGeneration, every owned condition and the node
// summary from one observation.
func setStatus(mc *fleetv1.ManagedCluster, obs observation, now time.Time, warning time.Duration) {
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		if len(msg) > maxMessage {
			msg = strings.ToValidUTF8(msg[:maxMessage-len("…")], "") + "…"
		}
		meta.SetStatusCondition(&mc.Status.Conditions, metav1.Condition{
			Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: mc.Generation,
		})
	}
	switch {
	case obs.paused:
		// Paused is the state asked for: Ready, so that waiters finish.
		msg := "mirroring is paused as asked; NodeSnapshots are kept as last seen"
		set(fleetv1.ConditionConnected, metav1.ConditionUnknown, fleetv1.ReasonPaused, msg)
		set(fleetv1.ConditionSynced, metav1.ConditionFalse, fleetv1.ReasonPaused, msg)
		set(fleetv1.ConditionReady, metav1.ConditionTrue, fleetv1.ReasonPaused, msg)
		set(fleetv1.ConditionReconciling, metav1.ConditionFalse, fleetv1.ReasonPaused, msg)
		set(fleetv1.ConditionStalled, metav1.ConditionFalse, fleetv1.ReasonPaused, msg)

	case obs.refusal != nil:
		reason, msg := obs.refusal.Reason, obs.refusal.Message
		set(fleetv1.ConditionConnected, metav1.ConditionUnknown, reason, msg)
		set(fleetv1.ConditionSynced, metav1.ConditionFalse, reason, msg)
		set(fleetv1.ConditionReady, metav1.ConditionFalse, reason, msg)
		set(fleetv1.ConditionReconciling, metav1.ConditionFalse, reason, msg)
		set(fleetv1.ConditionStalled, metav1.ConditionTrue, reason, msg)
		// Whatever credential there was is not the one in use now.
		mc.Status.Credential = nil
		meta.RemoveStatusCondition(&mc.Status.Conditions, fleetv1.ConditionCredentialExpiring)

	case obs.session != nil:
		st := obs.session
		conn := st.Connection
		set(fleetv1.ConditionConnected, conn.Status, conn.Reason, conn.Message)
		if st.Synced {
			set(fleetv1.ConditionSynced, metav1.ConditionTrue, fleetv1.ReasonSynced, fmt.Sprintf("initial node list mirrored (%d nodes)", st.Nodes.Total))
		} else {
			set(fleetv1.ConditionSynced, metav1.ConditionFalse, fleetv1.ReasonSyncing, "waiting for the initial node list to be mirrored")
		}
		var readyReason, readyMsg string
		switch {
		case conn.Status != metav1.ConditionTrue:
			readyReason, readyMsg = conn.Reason, conn.Message
		case !st.Synced:
			readyReason, readyMsg = fleetv1.ReasonSyncing, "waiting for the initial node list to be mirrored"
		case st.Unmirrored > 0:
			readyReason, readyMsg = fleetv1.ReasonTooManyNodes, fmt.Sprintf(
				"the member selects %d nodes, more than the operator's --max-nodes-per-cluster: %d are mirrored and kept up to date, %d are not; narrow spec.nodeSelector or raise the limit",
				st.Nodes.Total, st.Nodes.Total-int32(st.Unmirrored), st.Unmirrored)
		}
		stalled := (conn.Status == metav1.ConditionFalse && stalledReasons[conn.Reason]) || readyReason == fleetv1.ReasonTooManyNodes
		switch {
		case readyReason == "":
			set(fleetv1.ConditionReady, metav1.ConditionTrue, fleetv1.ReasonMirroring, fmt.Sprintf("mirroring %d nodes (%d ready) from %s", st.Nodes.Total, st.Nodes.Ready, st.KubernetesVersion))
			set(fleetv1.ConditionReconciling, metav1.ConditionFalse, fleetv1.ReasonMirroring, "up to date")
			set(fleetv1.ConditionStalled, metav1.ConditionFalse, fleetv1.ReasonMirroring, "up to date")
		case stalled:
			set(fleetv1.ConditionReady, metav1.ConditionFalse, readyReason, readyMsg)
			set(fleetv1.ConditionReconciling, metav1.ConditionFalse, readyReason, "needs a fix on the member cluster or in the kubeconfig")
			set(fleetv1.ConditionStalled, metav1.ConditionTrue, readyReason, readyMsg)
		default:
			set(fleetv1.ConditionReady, metav1.ConditionFalse, readyReason, readyMsg)
			set(fleetv1.ConditionReconciling, metav1.ConditionTrue, readyReason, readyMsg)
			set(fleetv1.ConditionStalled, metav1.ConditionFalse, readyReason, "retrying with backoff")
		}
		setCredential(mc, obs.credential, now, warning, set)
		if st.KubernetesVersion != "" {
			mc.Status.KubernetesVersion = st.KubernetesVersion
		}
		// Before the first list, the informer knows no nodes: keep the
		// last summary rather than report an empty cluster.
		if st.Synced {
			mc.Status.Nodes = st.Nodes
			mc.Status.Capacity = nonEmpty(st.Capacity)
			mc.Status.Allocatable = nonEmpty(st.Allocatable)
		}

	default:
		return
	}
	mc.Status.ObservedGeneration = mc.Generation
}

// setCredential reports the credential and whether it expires within the
// warning window.
func setCredential(mc *fleetv1.ManagedCluster, c fleetv1.MemberCredential, now time.Time, warning time.Duration, set func(string, metav1.ConditionStatus, string, string)) {
	mc.Status.Credential = &c
	switch {
	case c.ExpiresAt == nil:
		set(fleetv1.ConditionCredentialExpiring, metav1.ConditionFalse, fleetv1.ReasonCredentialNoExpiry, "the credential has no expiry the operator can read")
	case !now.Before(c.ExpiresAt.Time):
		set(fleetv1.ConditionCredentialExpiring, metav1.ConditionTrue, fleetv1.ReasonCredentialExpired,
			fmt.Sprintf("the credential expired at %s: rotate it (nodemirror join again)", c.ExpiresAt.UTC().Format(time.RFC3339)))
	case now.Add(warning).After(c.ExpiresAt.Time):
		set(fleetv1.ConditionCredentialExpiring, metav1.ConditionTrue, fleetv1.ReasonCredentialExpiresSoon,
			fmt.Sprintf("the credential expires at %s, in %s: rotate it (nodemirror join again)", c.ExpiresAt.UTC().Format(time.RFC3339), c.ExpiresAt.Sub(now).Round(time.Minute)))
	default:
		set(fleetv1.ConditionCredentialExpiring, metav1.ConditionFalse, fleetv1.ReasonCredentialValid,
			fmt.Sprintf("the credential expires at %s", c.ExpiresAt.UTC().Format(time.RFC3339)))
	}
}

// credentialRecheck is how long until the CredentialExpiring condition
// changes by the clock alone: the warning window opens or the credential
// expires. 0 when nothing is ahead.
func credentialRecheck(c *fleetv1.MemberCredential, now time.Time, warning time.Duration) time.Duration {
	if c == nil || c.ExpiresAt == nil {
		return 0
	}
	for _, at := range []time.Time{c.ExpiresAt.Add(-warning), c.ExpiresAt.Time} {
		if d := at.Sub(now); d > 0 {
			return d + time.Second
		}
	}
	return 0
}

func nonEmpty(l corev1.ResourceList) corev1.ResourceList {
	if len(l) == 0 {
		return nil
	}
	return l
}

// eventedConditions are announced with an Event when their reason changes.
var eventedConditions = []string{fleetv1.ConditionConnected, fleetv1.ConditionSynced, fleetv1.ConditionStalled, fleetv1.ConditionCredentialExpiring}

// recordEvents emits one Event for every evented condition whose status or
// reason changed between before and after.
func (r *Reconciler) recordEvents(before, after *fleetv1.ManagedCluster) {
	if r.Recorder == nil {
		return
	}
	for _, t := range eventedConditions {
		now := meta.FindStatusCondition(after.Status.Conditions, t)
		if now == nil {
			continue
		}
		if was := meta.FindStatusCondition(before.Status.Conditions, t); was != nil && was.Status == now.Status && was.Reason == now.Reason {
			continue
		}
		if (t == fleetv1.ConditionStalled || t == fleetv1.ConditionCredentialExpiring) && now.Status != metav1.ConditionTrue {
			continue
		}
		kind := corev1.EventTypeNormal
		if (t == fleetv1.ConditionStalled) || t == fleetv1.ConditionCredentialExpiring || (t == fleetv1.ConditionConnected && now.Status != metav1.ConditionTrue) {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(after, nil, kind, now.Reason, t, "%s=%s: %s", t, now.Status, now.Message)
	}
}
