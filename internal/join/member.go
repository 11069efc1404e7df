package join

import (
	"context"
	"fmt"
	"slices"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	memberrbac "github.com/nodemirror/nodemirror/config/member"
)

// Credential kinds of --credential.
const (
	// BoundToken is a TokenRequest token of the member's ServiceAccount:
	// it expires (--token-ttl, at most what the member's API server
	// allows) and is rotated by joining again.
	BoundToken = "bound-token"
	// ServiceAccountToken is a kubernetes.io/service-account-token Secret
	// on the member, filled by kube-controller-manager's token
	// controller: it does not expire and is revoked by deleting it.
	ServiceAccountToken = "service-account-token"
)

// MinTokenTTL is the shortest TokenRequest the API server grants.
const MinTokenTTL = 10 * time.Minute

// TokenSecretSuffix makes the name of the service-account-token Secret
// from the ServiceAccount's: nodemirror-hub-token.
const TokenSecretSuffix = "-token"

// credential is what the member gave the hub.
type credential struct {
	Kind  string
	Token string
	// Expiry is zero when the credential does not expire.
	Expiry time.Time
	// Requested is the expiry asked for (bound tokens).
	Requested time.Time
	// Source names where the token lives on the member.
	Source string
}

// applyMemberRBAC applies the objects of config/member and names them.
func applyMemberRBAC(ctx context.Context, m *cluster) ([]string, error) {
	objs, err := memberrbac.Objects()
	if err != nil {
		return nil, err
	}
	var done []string
	for _, o := range objs {
		if err := m.apply(ctx, o); err != nil {
			if apierrors.IsForbidden(err) {
				return done, fmt.Errorf("%w (joining needs rights to create ClusterRoles, ClusterRoleBindings, a Namespace and a ServiceAccount on the member)", err)
			}
			return done, err
		}
		done = append(done, describe(o))
	}
	return done, nil
}

// mintBoundToken asks the member for a token of the ServiceAccount that
// lasts ttl, and reports what the API server granted.
func mintBoundToken(ctx context.Context, m *cluster, namespace, sa string, ttl time.Duration) (*credential, error) {
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(ttl / time.Second))}}
	requested := time.Now().Add(ttl)
	var tr *authnv1.TokenRequest
	err := m.call(ctx, "requesting a token for ServiceAccount "+objName(namespace, sa), func(ctx context.Context) error {
		var err error
		tr, err = m.cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{FieldManager: FieldManager})
		return err
	})
	if err != nil {
		return nil, err
	}
	if tr.Status.Token == "" {
		return nil, fmt.Errorf("member context %q: the TokenRequest for ServiceAccount %s returned no token", m.context, objName(namespace, sa))
	}
	return &credential{
		Kind: BoundToken, Token: tr.Status.Token,
		Expiry: tr.Status.ExpirationTimestamp.UTC(), Requested: requested.UTC(),
		Source: "a TokenRequest of ServiceAccount " + objName(namespace, sa),
	}, nil
}

// serviceAccountTokenSecret returns the Secret the token controller fills
// with a non-expiring token of the ServiceAccount.
func serviceAccountTokenSecret(namespace, sa string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata": map[string]any{
			"name":        sa + TokenSecretSuffix,
			"namespace":   namespace,
			"annotations": map[string]any{corev1.ServiceAccountNameKey: sa},
		},
		"type": string(corev1.SecretTypeServiceAccountToken),
	}}
}

// serviceAccountToken applies the token Secret (replacing it first when
// rotate) and waits, at most wait, for the token controller to fill it.
func serviceAccountToken(ctx context.Context, m *cluster, namespace, sa string, rotate bool, wait time.Duration) (*credential, error) {
	s := serviceAccountTokenSecret(namespace, sa)
	name := describe(s)
	if rotate {
		if err := deleteIfPresent(ctx, m, s); err != nil {
			return nil, err
		}
		// A Secret that is still going would be updated, not replaced.
		if err := waitGone(ctx, m, s, wait); err != nil {
			return nil, err
		}
	}
	if err := m.apply(ctx, s); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		got := &corev1.Secret{}
		err := m.call(ctx, "reading "+name, func(ctx context.Context) error {
			return m.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: s.GetName()}, got)
		})
		if err != nil {
			return nil, err
		}
		if got.Type != corev1.SecretTypeServiceAccountToken {
			return nil, fmt.Errorf("member context %q: %s exists with type %s, not %s: delete it or choose --credential %s", m.context, name, got.Type, corev1.SecretTypeServiceAccountToken, BoundToken)
		}
		if token := got.Data[corev1.ServiceAccountTokenKey]; len(token) > 0 {
			return &credential{Kind: ServiceAccountToken, Token: string(token), Source: name}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("member context %q: %s has no data.token after %s: the token controller of kube-controller-manager fills it, so kube-controller-manager must run on the member with --service-account-private-key-file (managed control planes do); or use --credential %s", m.context, name, wait, BoundToken)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// verify authenticates to the member with token alone, over the member
// context's own connection, and checks that it is the ServiceAccount and
// may list nodes: what the operator will do with it.
func verify(ctx context.Context, m *cluster, namespace, sa, token string) error {
	cfg := rest.AnonymousClientConfig(m.config)
	cfg.BearerToken = token
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	want := serviceAccountUser(namespace, sa)
	var review *authnv1.SelfSubjectReview
	err = m.call(ctx, "authenticating with the new token", func(ctx context.Context) error {
		review, err = cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && review.Status.UserInfo.Username != want {
		return fmt.Errorf("member context %q: the new token authenticates as %q, not %q", m.context, review.Status.UserInfo.Username, want)
	}
	var sar *authzv1.SelfSubjectAccessReview
	err = m.call(ctx, "checking that the new token may list nodes", func(ctx context.Context) error {
		sar, err = cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
			Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{Verb: "list", Resource: "nodes"}},
		}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	if !sar.Status.Allowed {
		return fmt.Errorf("member context %q: %s may not list nodes: is ClusterRoleBinding nodemirror-member-reader in place (config/member)?", m.context, want)
	}
	return nil
}

// serviceAccountUser is the user name a ServiceAccount's tokens
// authenticate as.
func serviceAccountUser(namespace, sa string) string {
	return "system:serviceaccount:" + namespace + ":" + sa
}

// deleteMember deletes the token Secret and the objects of config/member,
// bindings first, and names what it deleted.
func deleteMember(ctx context.Context, m *cluster) ([]string, error) {
	namespace, sa, err := memberrbac.ServiceAccount()
	if err != nil {
		return nil, err
	}
	objs, err := memberrbac.Objects()
	if err != nil {
		return nil, err
	}
	slices.Reverse(objs)
	// The token Secret goes first, before its ServiceAccount.
	objs = append([]*unstructured.Unstructured{serviceAccountTokenSecret(namespace, sa)}, objs...)
	var done []string
	for _, o := range objs {
		gone := &unstructured.Unstructured{}
		gone.SetGroupVersionKind(o.GroupVersionKind())
		gone.SetNamespace(o.GetNamespace())
		gone.SetName(o.GetName())
		err := m.call(ctx, "deleting "+describe(o), func(ctx context.Context) error {
			return m.client.Delete(ctx, gone)
		})
		switch {
		case err == nil:
			done = append(done, describe(o))
		case apierrors.IsNotFound(err):
		default:
			return done, err
		}
	}
	return done, nil
}

func deleteIfPresent(ctx context.Context, c *cluster, obj *unstructured.Unstructured) error {
	gone := &unstructured.Unstructured{}
	gone.SetGroupVersionKind(obj.GroupVersionKind())
	gone.SetNamespace(obj.GetNamespace())
	gone.SetName(obj.GetName())
	err := c.call(ctx, "deleting "+describe(obj), func(ctx context.Context) error {
		return client.IgnoreNotFound(c.client.Delete(ctx, gone))
	})
	return err
}

// waitGone waits, at most wait, until obj is not found.
func waitGone(ctx context.Context, c *cluster, obj *unstructured.Unstructured, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(obj.GroupVersionKind())
		err := c.call(ctx, "reading "+describe(obj), func(ctx context.Context) error {
			return c.client.Get(ctx, client.ObjectKey{Namespace: obj.GetNamespace(), Name: obj.GetName()}, got)
		})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s context %q: %s is still there after %s (finalizers %v)", c.role, c.context, describe(obj), wait, got.GetFinalizers())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
