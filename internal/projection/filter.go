package projection

import (
	"strings"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// Labels that give a node its roles: node-role.kubernetes.io/<role>, and
// the older kubernetes.io/role=<role> that kubectl still reads.
const (
	RoleLabelPrefix = "node-role.kubernetes.io/"
	LegacyRoleLabel = "kubernetes.io/role"
)

// Filter decides which node labels and annotations are mirrored.
type Filter struct {
	labels      keyFilter
	annotations keyFilter
}

type keyFilter struct {
	include []string // nil: keep all (labels) or none (annotations), see defaultAll
	exclude []string
	// defaultAll tells what an empty include list means.
	defaultAll bool
}

// NewFilter builds the filter a MirrorSpec describes: by default every label
// and no annotation.
func NewFilter(spec fleetv1.MirrorSpec) Filter {
	f := Filter{labels: keyFilter{defaultAll: true}}
	if spec.Labels != nil {
		f.labels.include, f.labels.exclude = spec.Labels.Include, spec.Labels.Exclude
	}
	if spec.Annotations != nil {
		f.annotations.include, f.annotations.exclude = spec.Annotations.Include, spec.Annotations.Exclude
	}
	return f
}

// KeepLabel reports whether a node label is mirrored.
func (f Filter) KeepLabel(key string) bool { return f.labels.keep(key) }

// KeepAnnotation reports whether a node annotation is mirrored.
func (f Filter) KeepAnnotation(key string) bool { return f.annotations.keep(key) }

func (k keyFilter) keep(key string) bool {
	if hasAnyPrefix(key, k.exclude) {
		return false
	}
	if len(k.include) == 0 {
		return k.defaultAll
	}
	return hasAnyPrefix(key, k.include)
}

func hasAnyPrefix(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// filterMap returns the entries of m whose key passes keep, or nil when none do.
func filterMap(m map[string]string, keep func(string) bool) map[string]string {
	var out map[string]string
	for k, v := range m {
		if !keep(k) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(m))
		}
		out[k] = v
	}
	return out
}
