package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/kubernetes"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
)

// User is an authenticated hub user.
type User struct {
	Name   string              `json:"username"`
	UID    string              `json:"uid,omitempty"`
	Groups []string            `json:"groups,omitempty"`
	Extra  map[string][]string `json:"extra,omitempty"`
}

// Auth answers who a token belongs to and what they may list.
type Auth interface {
	// Authenticate returns nil and no error for a token the hub rejects.
	Authenticate(ctx context.Context, token string) (*User, error)
	// Allowed says whether u may list resource in namespace ("" for all
	// namespaces), and if not, why.
	Allowed(ctx context.Context, u *User, resource, namespace string) (bool, string, error)
}

// hubAuth asks the hub's API server with TokenReview and
// SubjectAccessReview and caches the answers briefly, so that a reconnect
// storm does not become a review storm.
type hubAuth struct {
	cs        kubernetes.Interface
	ttl       time.Duration
	tokens    *cache.LRUExpireCache
	decisions *cache.LRUExpireCache
}

type decision struct {
	allowed bool
	reason  string
}

func newHubAuth(cs kubernetes.Interface, ttl time.Duration) *hubAuth {
	return &hubAuth{cs: cs, ttl: ttl, tokens: cache.NewLRUExpireCache(4096), decisions: cache.NewLRUExpireCache(16384)}
}

func (a *hubAuth) Authenticate(ctx context.Context, token string) (*User, error) {
	key := sha256.Sum256([]byte(token))
	if v, ok := a.tokens.Get(key); ok {
		return v.(*User), nil
	}
	review, err := a.cs.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	var u *User
	if review.Status.Authenticated {
		u = &User{Name: review.Status.User.Username, UID: review.Status.User.UID, Groups: review.Status.User.Groups}
		if len(review.Status.User.Extra) > 0 {
			u.Extra = map[string][]string{}
			for k, v := range review.Status.User.Extra {
				u.Extra[k] = v
			}
		}
	}
	// Rejections are cached too, for less time: a retrying client with a
	// bad token must not reach the hub on every attempt.
	ttl := a.ttl
	if u == nil {
		ttl /= 4
	}
	a.tokens.Add(key, u, ttl)
	return u, nil
}

func (a *hubAuth) Allowed(ctx context.Context, u *User, resource, namespace string) (bool, string, error) {
	key := strings.Join([]string{u.Name, u.UID, strings.Join(u.Groups, ","), resource, namespace}, "\x00")
	if v, ok := a.decisions.Get(key); ok {
		d := v.(decision)
		return d.allowed, d.reason, nil
	}
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	sar, err := a.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: namespace, Verb: "list", Group: fleetv1.GroupVersion.Group, Version: fleetv1.GroupVersion.Version, Resource: resource,
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subject access review: %w", err)
	}
	d := decision{allowed: sar.Status.Allowed && !sar.Status.Denied, reason: sar.Status.Reason}
	a.decisions.Add(key, d, a.ttl)
	return d.allowed, d.reason, nil
}

// allowAll is --insecure-no-auth: everyone is one demo user who may do
// everything.
type allowAll struct{}

func (allowAll) Authenticate(context.Context, string) (*User, error) {
	return &User{Name: "system:anonymous", Groups: []string{"system:unauthenticated"}}, nil
}

func (allowAll) Allowed(context.Context, *User, string, string) (bool, string, error) {
	return true, "", nil
}

// bearerToken finds the token in the Authorization header or, for
// browsers, in a websocket subprotocol.
func bearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	for _, header := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(header, ",") {
			if enc, ok := strings.CutPrefix(strings.TrimSpace(p), protocol.BearerProtocolPrefix); ok {
				if tok, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "=")); err == nil {
					return string(tok)
				}
			}
		}
	}
	return ""
}

// forbiddenMessage says what was refused the way the API server does.
func forbiddenMessage(u *User, resource, namespace, reason string) string {
	where := "at the cluster scope"
	if namespace != "" {
		where = fmt.Sprintf("in the namespace %q", namespace)
	}
	msg := fmt.Sprintf("User %q cannot list resource %q in API group %q %s", u.Name, resource, fleetv1.GroupVersion.Group, where)
	if reason != "" {
		msg += ": " + reason
	}
	return msg
}
