package projection

import (
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// SnapshotLabels are a snapshot's metadata.labels: the cluster label, and
// the mirrored node labels that are valid label keys and values outside
// the operator's own prefix (a member is hostile until checked: its API
// server need not validate what it sends). Node labels left out stay in
// status.labels.
func SnapshotLabels(cluster string, mirrored map[string]string) map[string]string {
	out := make(map[string]string, len(mirrored)+1)
	for k, v := range mirrored {
		if strings.HasPrefix(k, fleetv1.ReservedPrefix) ||
			len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			continue
		}
		out[k] = v
	}
	out[fleetv1.ClusterLabel] = cluster
	return out
}
