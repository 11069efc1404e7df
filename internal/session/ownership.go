package session

import (
	"encoding/json"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// leftoverLabels are the labels of a snapshot that the operator set when it
// created it and no longer sets. The create (a POST) recorded them under
// an Update entry of the operator's field manager; a later apply owns what
// it sends under an Apply entry, and server-side apply removes only the
// fields it owned alone. So a label that the node lost after its snapshot
// was created stays, owned by the Update entry, until removed by hand.
//
// A label counts when the operator has applied the snapshot at least once
// (before that, the create wrote exactly the labels it wanted) and neither
// that apply nor any other manager owns it: a label another manager set
// under the same key is theirs and stays.
func leftoverLabels(entries []metav1.ManagedFieldsEntry) []string {
	var created, kept []string
	applied := false
	for _, e := range entries {
		keys := labelKeys(e.FieldsV1)
		switch {
		case e.Manager == fleetv1.FieldManager && e.Subresource == "" && e.Operation == metav1.ManagedFieldsOperationUpdate:
			created = append(created, keys...)
		case e.Manager == fleetv1.FieldManager && e.Subresource == "" && e.Operation == metav1.ManagedFieldsOperationApply:
			applied = true
			kept = append(kept, keys...)
		default:
			kept = append(kept, keys...)
		}
	}
	if !applied || len(created) == 0 {
		return nil
	}
	var out []string
	for _, k := range created {
		if !slices.Contains(kept, k) && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// labelKeys lists the metadata.labels keys a managedFields entry owns.
// Entries that cannot be read own none: the worst case is a label left in
// place, never one removed that someone owns.
func labelKeys(f *metav1.FieldsV1) []string {
	if f == nil || !strings.Contains(string(f.Raw), `"f:labels"`) {
		return nil
	}
	var fields struct {
		Metadata struct {
			Labels map[string]json.RawMessage `json:"f:labels"`
		} `json:"f:metadata"`
	}
	if err := json.Unmarshal(f.Raw, &fields); err != nil {
		return nil
	}
	keys := make([]string, 0, len(fields.Metadata.Labels))
	for k := range fields.Metadata.Labels {
		if key, ok := strings.CutPrefix(k, "f:"); ok {
			keys = append(keys, key)
		}
	}
	return keys
}
