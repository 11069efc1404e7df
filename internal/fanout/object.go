package fanout

import (
	"encoding/json"
	"fmt"
	"unique"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/nodemirror/nodemirror/internal/protocol"
)

// Object is one hub object as the broker holds it: encoded once and shared
// by every client, never modified after creation.
type Object struct {
	Namespace string
	Name      string
	// Cluster is the ManagedCluster the object belongs to (its own name for
	// a ManagedCluster), for cluster filters.
	Cluster         string
	ResourceVersion string
	// Raw is the object's JSON, managedFields stripped.
	Raw []byte
	rv  uint64
}

// ClusterOf tells which ManagedCluster an object belongs to.
type ClusterOf func(u *unstructured.Unstructured) string

// ByLabel reads the cluster from a label.
func ByLabel(key string) ClusterOf {
	return func(u *unstructured.Unstructured) string { return u.GetLabels()[key] }
}

// ByName uses the object's own name.
func ByName(u *unstructured.Unstructured) string { return u.GetName() }

func newObject(u *unstructured.Unstructured, clusterOf ClusterOf) (*Object, error) {
	u.SetManagedFields(nil)
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("encoding %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	rv, _ := protocol.ParseResourceVersion(u.GetResourceVersion())
	return &Object{
		Namespace:       intern(u.GetNamespace()),
		Name:            u.GetName(),
		Cluster:         clusterOf(u),
		ResourceVersion: u.GetResourceVersion(),
		Raw:             raw,
		rv:              rv,
	}, nil
}

// intern returns the one copy of s that every object and filter share, so
// that comparing a filter's namespace with an object's, once per client and
// change, finds the same pointer and reads no bytes.
func intern(s string) string { return unique.Make(s).Value() }

// Filter selects the objects a subscription receives.
type Filter struct {
	// Namespace, or "" for all namespaces.
	Namespace string
	// Clusters, if not empty, keeps only objects of these clusters.
	Clusters map[string]bool
}

// Match reports whether o passes the filter.
func (f Filter) Match(o *Object) bool {
	if f.Namespace != "" && o.Namespace != f.Namespace {
		return false
	}
	return len(f.Clusters) == 0 || f.Clusters[o.Cluster]
}

// NewFilter returns the filter for a namespace ("" for all namespaces) and,
// if clusters is not empty, for objects of those clusters only.
func NewFilter(namespace string, clusters []string) Filter {
	f := Filter{Namespace: intern(namespace)}
	if len(clusters) > 0 {
		f.Clusters = make(map[string]bool, len(clusters))
		for _, c := range clusters {
			f.Clusters[c] = true
		}
	}
	return f
}
