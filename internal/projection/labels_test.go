package projection

import (
	"maps"
	"testing"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

func TestSnapshotLabels(t *testing.T) {
	got := SnapshotLabels("east", map[string]string{
		"node-role.kubernetes.io/worker": "",
		"topology.kubernetes.io/zone":    "eu-1a",
		fleetv1.ClusterLabel:             "west", // a node claiming another cluster
		"fleet.nodemirror.io/anything":   "x",
		"bad key with spaces":            "v",
		"ok":                             "bad value with spaces",
		"long":                           string(make([]byte, 64)),
	})
	want := map[string]string{
		"node-role.kubernetes.io/worker": "",
		"topology.kubernetes.io/zone":    "eu-1a",
		fleetv1.ClusterLabel:             "east",
	}
	if !maps.Equal(got, want) {
		t.Errorf("SnapshotLabels = %v, want %v", got, want)
	}
}
