package managedcluster

import (
	"context"
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
)

// MemberState says whether a cluster's member can be acted on now.
type MemberState string

const (
	// MemberReady: the session runs and the member answers healthy.
	MemberReady MemberState = "Ready"
	// MemberPaused: spec.paused is set; nothing is acted on.
	MemberPaused MemberState = "Paused"
	// MemberDisconnected: the session runs, but the member does not
	// answer healthy (unreachable, unhealthy, refusing us, or not probed
	// yet: see Reason).
	MemberDisconnected MemberState = "Disconnected"
	// MemberNotStarted: no session runs: the member access is refused
	// (see Reason), or the cluster has not been reconciled yet.
	MemberNotStarted MemberState = "NotStarted"
	// MemberUnknown: no such ManagedCluster in the namespace.
	MemberUnknown MemberState = "UnknownCluster"
)

// MemberAccess is a cluster's member access for another controller.
type MemberAccess struct {
	State MemberState
	// Reason and Message explain a state other than Ready, in the
	// ManagedCluster's own condition words (e.g. Unreachable,
	// SecretNotFound, Connecting).
	Reason, Message string
	// Config is set for MemberReady only: a copy of the running
	// session's member config, built by the operator's Policy (dial
	// guard, bounded transport, no redirects) and rate limited as
	// --member-qps. Every client built from it gets its own limiter.
	Config *rest.Config
}

// Member returns the member access of ManagedCluster key. With sharding,
// a cluster another replica owns has no session here: its access is built
// from its Secret by the same Policy, and its state read from the
// Connected condition its owner writes. The key's
// namespace is the caller's: a NodeOperation passes its own, and so only
// ever reaches the ManagedClusters of its namespace. It never waits on the
// member; the error is a hub read error only.
func (r *Reconciler) Member(ctx context.Context, key types.NamespacedName) (MemberAccess, error) {
	mc := &fleetv1.ManagedCluster{}
	if err := r.Client.Get(ctx, key, mc); err != nil {
		if apierrors.IsNotFound(err) {
			return MemberAccess{State: MemberUnknown, Reason: "NotFound", Message: "no ManagedCluster " + key.Name + " in namespace " + key.Namespace}, nil
		}
		return MemberAccess{}, err
	}
	if mc.Spec.Paused {
		return MemberAccess{State: MemberPaused, Reason: fleetv1.ReasonPaused, Message: "the ManagedCluster is paused"}, nil
	}
	if !r.ownsCluster(key) {
		return r.memberElsewhere(ctx, mc)
	}
	current, ok := r.sessions.get(key)
	if !ok || current.version.uid != mc.UID || current.config == nil {
		a := MemberAccess{State: MemberNotStarted, Reason: "NotStarted", Message: "the cluster's session has not started"}
		if c := meta.FindStatusCondition(mc.Status.Conditions, fleetv1.ConditionReady); c != nil && c.Status != metav1.ConditionTrue {
			a.Reason, a.Message = c.Reason, c.Message
		}
		return a, nil
	}
	conn := current.session.Status().Connection
	if conn.Status != metav1.ConditionTrue {
		return MemberAccess{State: MemberDisconnected, Reason: conn.Reason, Message: conn.Message}, nil
	}
	return MemberAccess{State: MemberReady, Config: rest.CopyConfig(current.config)}, nil
}

// memberElsewhere is the member access of a cluster whose session runs on
// another replica.
func (r *Reconciler) memberElsewhere(ctx context.Context, mc *fleetv1.ManagedCluster) (MemberAccess, error) {
	c := meta.FindStatusCondition(mc.Status.Conditions, fleetv1.ConditionConnected)
	switch {
	case c == nil || c.ObservedGeneration != mc.Generation:
		return MemberAccess{State: MemberNotStarted, Reason: "NotStarted", Message: "the cluster's owning replica has not reported it connected yet"}, nil
	case c.Status != metav1.ConditionTrue:
		return MemberAccess{State: MemberDisconnected, Reason: c.Reason, Message: c.Message}, nil
	}
	in, err := r.memberInput(ctx, mc)
	if refusal := (*member.Refusal)(nil); errors.As(err, &refusal) {
		return MemberAccess{State: MemberNotStarted, Reason: refusal.Reason, Message: refusal.Message}, nil
	} else if err != nil {
		return MemberAccess{}, err
	}
	return MemberAccess{State: MemberReady, Config: in.config}, nil
}
