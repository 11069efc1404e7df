package sidecar

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
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

// Auth answers who a token belongs to and what they may read.
type Auth interface {
	// Authenticate returns nil and no error for a token the hub rejects.
	Authenticate(ctx context.Context, token string) (*User, error)
	// Cached reports whether Authenticate would answer for token without
	// asking the hub: only those requests spend a client's rate limit.
	Cached(token string) bool
	// Allowed says whether u may verb (list or watch) resource in
	// namespace ("" for all namespaces), and if not, why.
	Allowed(ctx context.Context, u *User, verb, resource, namespace string) (bool, string, error)
}

// hubAuth asks the hub's API server with TokenReview and
// SubjectAccessReview and caches the answers briefly, so that a reconnect
// storm does not become a review storm. The two reviews go through
// separate clients, each with its own QPS budget, so that a flood of
// new tokens cannot starve the access checks of users already in, nor
// the other way round.
type hubAuth struct {
	tokenReviews  kubernetes.Interface
	accessReviews kubernetes.Interface
	audiences     []string
	ttl           time.Duration
	tokens        *cache.LRUExpireCache
	decisions     *cache.LRUExpireCache
}

type decision struct {
	allowed bool
	reason  string
}

func newHubAuth(tokenReviews, accessReviews kubernetes.Interface, audiences []string, ttl time.Duration) *hubAuth {
	return &hubAuth{
		tokenReviews: tokenReviews, accessReviews: accessReviews, audiences: audiences, ttl: ttl,
		tokens: cache.NewLRUExpireCache(4096), decisions: cache.NewLRUExpireCache(16384),
	}
}

func tokenKey(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

func (a *hubAuth) Cached(token string) bool {
	_, ok := a.tokens.Get(tokenKey(token))
	return ok
}

func (a *hubAuth) Authenticate(ctx context.Context, token string) (*User, error) {
	key := tokenKey(token)
	if v, ok := a.tokens.Get(key); ok {
		return v.(*User), nil
	}
	review, err := a.tokenReviews.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	var u *User
	// With audiences asked for, the API server answers with those the token
	// is good for; TokenReview's contract leaves checking them to us.
	if review.Status.Authenticated && (len(a.audiences) == 0 || intersects(a.audiences, review.Status.Audiences)) {
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

func intersects(a, b []string) bool {
	for _, s := range a {
		if slices.Contains(b, s) {
			return true
		}
	}
	return false
}

// decisionKey names one access question unambiguously: JSON keeps
// groups ["a,b"] apart from ["a","b"], and encodes extra with its keys
// sorted.
func decisionKey(u *User, verb, resource, namespace string) string {
	key, err := json.Marshal(struct {
		Name, UID                 string
		Groups                    []string
		Extra                     map[string][]string
		Verb, Resource, Namespace string
	}{u.Name, u.UID, u.Groups, u.Extra, verb, resource, namespace})
	if err != nil {
		panic(err) // strings, slices and maps of strings always encode
	}
	return string(key)
}

func (a *hubAuth) Allowed(ctx context.Context, u *User, verb, resource, namespace string) (bool, string, error) {
	key := decisionKey(u, verb, resource, namespace)
	if v, ok := a.decisions.Get(key); ok {
		d := v.(decision)
		return d.allowed, d.reason, nil
	}
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = v
	}
	sar, err := a.accessReviews.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: namespace, Verb: verb, Group: fleetv1.GroupVersion.Group, Version: fleetv1.GroupVersion.Version, Resource: resource,
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

func (allowAll) Cached(string) bool { return true }

func (allowAll) Allowed(context.Context, *User, string, string, string) (bool, string, error) {
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

// forbiddenMessage says what was refused the way the API server does. The
// namespace may come from a client, so it is quoted with a bound.
func forbiddenMessage(u *User, verb, resource, namespace, reason string) string {
	where := "at the cluster scope"
	if namespace != "" {
		where = "in the namespace " + protocol.Quote(namespace)
	}
	msg := fmt.Sprintf("User %s cannot %s resource %q in API group %q %s", protocol.Quote(u.Name), verb, resource, fleetv1.GroupVersion.Group, where)
	if reason != "" {
		msg += ": " + reason
	}
	return msg
}
