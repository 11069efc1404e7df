package sidecar

import (
	"context"
	"slices"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestDecisionKeyIsUnambiguous(t *testing.T) {
	user := func(name, uid string, groups []string, extra map[string][]string) *User {
		return &User{Name: name, UID: uid, Groups: groups, Extra: extra}
	}
	seen := map[string]string{}
	for name, key := range map[string]string{
		"groups a and b":     decisionKey(user("u", "1", []string{"a", "b"}, nil), verbList, "nodesnapshots", "ns"),
		"group a,b":          decisionKey(user("u", "1", []string{"a,b"}, nil), verbList, "nodesnapshots", "ns"),
		"no groups":          decisionKey(user("u", "1", nil, nil), verbList, "nodesnapshots", "ns"),
		"extra x":            decisionKey(user("u", "1", []string{"a", "b"}, map[string][]string{"scopes": {"x"}}), verbList, "nodesnapshots", "ns"),
		"extra y":            decisionKey(user("u", "1", []string{"a", "b"}, map[string][]string{"scopes": {"y"}}), verbList, "nodesnapshots", "ns"),
		"extra x and y":      decisionKey(user("u", "1", []string{"a", "b"}, map[string][]string{"scopes": {"x", "y"}}), verbList, "nodesnapshots", "ns"),
		"extra x,y":          decisionKey(user("u", "1", []string{"a", "b"}, map[string][]string{"scopes": {"x,y"}}), verbList, "nodesnapshots", "ns"),
		"watch":              decisionKey(user("u", "1", []string{"a", "b"}, nil), verbWatch, "nodesnapshots", "ns"),
		"name and uid moved": decisionKey(user("u\x001", "", []string{"a", "b"}, nil), verbList, "nodesnapshots", "ns"),
		"all namespaces":     decisionKey(user("u", "1", []string{"a", "b"}, nil), verbList, "nodesnapshots", ""),
	} {
		if other, dup := seen[key]; dup {
			t.Errorf("%s and %s share the key %s", name, other, key)
		}
		seen[key] = name
	}
}

// TestCachedDecisionsKeepUsersApart asks a hub that grants group "a,b" and
// nothing else: a user in groups "a" and "b" must not get the decision
// cached for "a,b", nor a user without the granting extra the decision
// for one with it.
func TestCachedDecisionsKeepUsersApart(t *testing.T) {
	cs := fake.NewClientset()
	reviews := 0
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		reviews++
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		sar.Status.Allowed = slices.Equal(sar.Spec.Groups, []string{"a,b"}) || slices.Contains(sar.Spec.Extra["scopes"], "fleet")
		return true, sar, nil
	})
	auth := newHubAuth(cs, cs, nil, time.Hour)
	for _, tc := range []struct {
		user    *User
		allowed bool
	}{
		{&User{Name: "u", Groups: []string{"a,b"}}, true},
		{&User{Name: "u", Groups: []string{"a", "b"}}, false},
		{&User{Name: "v", Extra: map[string][]string{"scopes": {"fleet"}}}, true},
		{&User{Name: "v", Extra: map[string][]string{"scopes": {"other"}}}, false},
		{&User{Name: "v"}, false},
	} {
		allowed, _, err := auth.Allowed(context.Background(), tc.user, verbWatch, "nodesnapshots", "ns")
		if err != nil || allowed != tc.allowed {
			t.Errorf("%+v: allowed %v, %v; want %v", tc.user, allowed, err, tc.allowed)
		}
	}
	if reviews != 5 {
		t.Errorf("%d reviews for 5 different questions", reviews)
	}
}
