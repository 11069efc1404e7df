package managedcluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
)

// memberInput is everything a session is started from.
type memberInput struct {
	config   *rest.Config
	selector string
	// credential is what the kubeconfig's credential says of itself.
	credential fleetv1.MemberCredential
	// hash changes whenever the session has to restart: new credentials,
	// selector, mirror filter, resync period, or a recreated ManagedCluster.
	hash string
}

// memberInput reads the kubeconfig Secret and the spec into a session's
// input. A *member.Refusal means the input is unusable until someone
// changes it; any other error is transient.
func (r *Reconciler) memberInput(ctx context.Context, mc *fleetv1.ManagedCluster) (*memberInput, error) {
	secret := &corev1.Secret{}
	ref := types.NamespacedName{Namespace: mc.Namespace, Name: mc.Spec.KubeconfigSecretRef.Name}
	// Read through the API, not a cache: the operator does not keep every
	// Secret of the hub in memory, only their metadata to notice changes.
	if err := r.APIReader.Get(ctx, ref, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &member.Refusal{Reason: fleetv1.ReasonSecretNotFound, Message: fmt.Sprintf("Secret %q not found in namespace %q", ref.Name, ref.Namespace)}
		}
		return nil, fmt.Errorf("reading kubeconfig Secret %s: %w", ref, err)
	}
	if secret.Labels[fleetv1.KubeconfigSecretLabel] != "true" {
		return nil, &member.Refusal{Reason: fleetv1.ReasonSecretNotMarked, Message: fmt.Sprintf(
			"Secret %q is not marked as a member kubeconfig: label it %s=true", ref.Name, fleetv1.KubeconfigSecretLabel)}
	}
	key := mc.KubeconfigKey()
	kubeconfig, ok := secret.Data[key]
	if !ok || len(kubeconfig) == 0 {
		return nil, &member.Refusal{Reason: fleetv1.ReasonSecretKeyNotFound, Message: fmt.Sprintf("Secret %q has no key %q", ref.Name, key)}
	}
	cfg, err := r.Policy.RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = r.MemberQPS, r.MemberBurst
	selector, err := metav1.LabelSelectorAsSelector(mc.Spec.NodeSelector)
	if err != nil {
		return nil, &member.Refusal{Reason: fleetv1.ReasonInvalidNodeSelector, Message: fmt.Sprintf("spec.nodeSelector: %v", err)}
	}
	spec, err := json.Marshal(struct {
		UID      types.UID
		Selector string
		Mirror   fleetv1.MirrorSpec
		Resync   *metav1.Duration
	}{mc.UID, selector.String(), mc.Spec.Mirror, mc.Spec.ResyncPeriod})
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(spec)
	h.Write(kubeconfig)
	return &memberInput{config: cfg, selector: selector.String(), credential: credentialOf(cfg), hash: hex.EncodeToString(h.Sum(nil))}, nil
}

// credentialOf reads the credential's type and expiry. An expiry that
// cannot be read is left out: the member's answer is what counts.
func credentialOf(cfg *rest.Config) fleetv1.MemberCredential {
	expiry, kind, err := member.CredentialExpiry(cfg)
	c := fleetv1.MemberCredential{Type: kind}
	if kind == "" {
		c.Type = fleetv1.CredentialTypeNone
	}
	if err == nil && !expiry.IsZero() {
		c.ExpiresAt = &metav1.Time{Time: expiry.Truncate(time.Second)}
	}
	return c
}
