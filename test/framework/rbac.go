package framework

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// ViewerRole is the shipped ClusterRole that lets people read the two kinds.
const ViewerRole = "nodemirror-viewer"

// ApplyUserRoles creates the ClusterRoles of config/rbac/user_roles.yaml,
// as shipped, unless they exist.
func ApplyUserRoles(ctx context.Context, cs kubernetes.Interface) error {
	raw, err := os.ReadFile(filepath.Join(RepoRoot(), "config", "rbac", "user_roles.yaml"))
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		role := &rbacv1.ClusterRole{}
		if err := yaml.UnmarshalStrict([]byte(doc), role); err != nil {
			return fmt.Errorf("user_roles.yaml: %w", err)
		}
		if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// ViewerToken creates ServiceAccount namespace/name, binds it in its
// namespace to the shipped viewer role, and returns a token for it once
// the hub's authorizer grants the binding: it learns of RoleBindings from
// a watch, and on a loaded machine a request made at once can still be
// refused.
func ViewerToken(ctx context.Context, cs kubernetes.Interface, namespace, name string) (string, error) {
	if err := ApplyUserRoles(ctx, cs); err != nil {
		return "", err
	}
	if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-views"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: ViewerRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}},
	}
	if _, err := cs.RbacV1().RoleBindings(namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	if err := waitAllowed(ctx, cs, "system:serviceaccount:"+namespace+":"+name, "list", namespace, "nodesnapshots"); err != nil {
		return "", err
	}
	return Token(ctx, cs, namespace, name)
}

// waitAllowed waits until the hub's authorizer lets user verb resource of
// the fleet group in namespace.
func waitAllowed(ctx context.Context, cs kubernetes.Interface, user, verb, namespace, resource string) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ok, err := allowed(ctx, cs, user, verb, namespace, fleetv1.GroupVersion.Group, resource)
		return err == nil && ok, nil
	})
	if err != nil {
		return fmt.Errorf("%s may not %s %s in %s yet: %w", user, verb, resource, namespace, err)
	}
	return nil
}

// Token returns an hour's token for ServiceAccount namespace/name.
func Token(ctx context.Context, cs kubernetes.Interface, namespace, name string) (string, error) {
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// Can asks the hub, with a SubjectAccessReview, whether user may verb
// resources of group (cluster-wide).
func Can(ctx context.Context, t testing.TB, cs kubernetes.Interface, user, verb, group, resource string) bool {
	t.Helper()
	ok, err := allowed(ctx, cs, user, verb, "", group, resource)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// allowed is the hub's SubjectAccessReview answer for user ("" namespace:
// cluster-wide).
func allowed(ctx context.Context, cs kubernetes.Interface, user, verb, namespace, group, resource string) (bool, error) {
	sar, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               user,
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: namespace, Verb: verb, Group: group, Resource: resource},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, err
	}
	return sar.Status.Allowed, nil
}
