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

func TestIsCollection(t *testing.T) {
	for path, want := range map[string]bool{
		"/apis/fleet.nodemirror.io/v1alpha1/namespaces/a/nodesnapshots":     true,
		"/apis/fleet.nodemirror.io/v1alpha1/namespaces/a/nodesnapshots/c.n": false,
		"/apis/coordination.k8s.io/v1/leases":                               true,
		"/api/v1/namespaces":                                                true,
		"/api/v1/namespaces/kube-system":                                    false,
		"/readyz":                                                           false,
	} {
		if got := isCollection(path); got != want {
			t.Errorf("isCollection(%q) = %v, want %v", path, got, want)
		}
	}
}
