package framework

import "testing"

func TestResourceOf(t *testing.T) {
	for path, want := range map[string][2]string{
		"/apis/fleet.nodemirror.io/v1alpha1/namespaces/a/nodesnapshots":            {"a", "nodesnapshots"},
		"/apis/fleet.nodemirror.io/v1alpha1/namespaces/a/nodesnapshots/c.n":        {"a", "nodesnapshots"},
		"/apis/fleet.nodemirror.io/v1alpha1/namespaces/a/managedclusters/c/status": {"a", "managedclusters/status"},
		"/api/v1/nodes":                  {"", "nodes"},
		"/api/v1/namespaces/kube-system": {"", "namespaces"},
		"/readyz":                        {"", "/readyz"},
	} {
		ns, res := resourceOf(path)
		if ns != want[0] || res != want[1] {
			t.Errorf("resourceOf(%q) = %q, %q; want %q, %q", path, ns, res, want[0], want[1])
		}
	}
}
