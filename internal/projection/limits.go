package projection

import (
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// A member cluster is whatever server a tenant pointed the operator at, so
// nothing it reports about a node is trusted to be of sane size: these caps
// bound every part of a snapshot. The CRD schema enforces the same numbers
// (see api/v1alpha1), so the hub refuses an oversize snapshot whoever
// writes it. What a cap cut is named in status.truncated.
const (
	MaxLabels          = fleetv1.MaxSnapshotLabels
	MaxLabelBytes      = 32 << 10 // keys and values of all mirrored labels
	MaxAnnotations     = fleetv1.MaxSnapshotAnnotations
	MaxAnnotationBytes = 16 << 10
	MaxKeyLength       = 317 // a qualified name: 253-byte prefix, '/', 63-byte name
	MaxLabelValue      = 63
	MaxAnnotationValue = 4 << 10
	MaxConditions      = 32
	MaxMessage         = fleetv1.MaxConditionMessage
	MaxReason          = 128
	MaxTaints          = 64
	MaxAddresses       = 16
	MaxResources       = 32
	MaxVersion         = fleetv1.MaxVersionLength
	MaxInfo            = 128 // OS image, kernel, architecture, operating system
	MaxRoles           = 16
)

// capper applies the caps and records what it cut.
type capper struct{ truncated []string }

func (c *capper) cut(what string) {
	switch {
	case slices.Contains(c.truncated, what):
	case len(c.truncated) == maxTruncated-1:
		c.truncated = append(c.truncated, "more")
	case len(c.truncated) < maxTruncated-1:
		c.truncated = append(c.truncated, what)
	}
}

// maxTruncated bounds status.truncated itself (the schema allows 64).
const maxTruncated = 32

// str cuts s to max bytes, on a rune boundary.
func (c *capper) str(what, s string, max int) string {
	if len(s) <= max {
		return s
	}
	c.cut(what)
	s = s[:max]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// kv keeps, in key order, the entries that fit the count and byte caps;
// an entry whose key or value is too long to be a valid label or
// annotation is dropped rather than cut, since a cut key means another key.
func (c *capper) kv(what string, m map[string]string, maxEntries, maxBytes, maxValue int) map[string]string {
	if m == nil {
		return nil
	}
	total, out := 0, map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if len(k) > MaxKeyLength || len(v) > maxValue {
			c.cut(what)
			continue
		}
		if len(out) == maxEntries || total+len(k)+len(v) > maxBytes {
			c.cut(what)
			break
		}
		total += len(k) + len(v)
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (c *capper) taints(ts []corev1.Taint) []corev1.Taint {
	if len(ts) > MaxTaints {
		c.cut("taints")
		ts = ts[:MaxTaints]
	}
	var out []corev1.Taint
	for _, t := range ts {
		if len(t.Key) > MaxKeyLength || len(t.Value) > MaxLabelValue || len(t.Effect) > 32 {
			c.cut("taints")
			continue
		}
		out = append(out, t)
	}
	return out
}

func (c *capper) addresses(as []corev1.NodeAddress) []corev1.NodeAddress {
	if len(as) > MaxAddresses {
		c.cut("addresses")
		as = as[:MaxAddresses]
	}
	var out []corev1.NodeAddress
	for _, a := range as {
		if len(a.Address) > 253 || len(a.Type) > 32 {
			c.cut("addresses")
			continue
		}
		out = append(out, a)
	}
	return out
}

// resources keeps cpu, memory and pods, then others in name order, up to
// MaxResources; quantities are the member's own, already parsed.
func (c *capper) resources(what string, l corev1.ResourceList) corev1.ResourceList {
	for n := range l {
		if len(n) > MaxKeyLength {
			c.cut(what)
			l = maps.Clone(l)
			maps.DeleteFunc(l, func(n corev1.ResourceName, _ resource.Quantity) bool { return len(n) > MaxKeyLength })
			break
		}
	}
	if len(l) <= MaxResources {
		return l
	}
	c.cut(what)
	names := slices.SortedFunc(maps.Keys(l), func(a, b corev1.ResourceName) int {
		rank := func(n corev1.ResourceName) int {
			switch n {
			case corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods:
				return 0
			}
			return 1
		}
		if r := rank(a) - rank(b); r != 0 {
			return r
		}
		return strings.Compare(string(a), string(b))
	})
	out := corev1.ResourceList{}
	for _, n := range names[:MaxResources] {
		out[n] = l[n]
	}
	return out
}
