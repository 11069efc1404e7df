package nodeoperation_test

import (
	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

func roleBinding(ns, user, role string) *rbacv1.RoleBinding {
	return &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user + "-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
}

func sarFor(user, ns, verb string) *authzv1.SubjectAccessReview {
	return &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:               user,
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: fleetv1.GroupVersion.Group, Resource: "nodeoperations"},
	}}
}

func canStatus(f *fixture, user string) bool {
	sar := sarFor(user, f.ns, "update")
	sar.Spec.ResourceAttributes.Subresource = "status"
	f.must(hub.Create(ctx, sar))
	return sar.Status.Allowed
}
