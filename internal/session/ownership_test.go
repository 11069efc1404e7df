package session

import (
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

func TestLeftoverLabels(t *testing.T) {
	entry := func(manager string, op metav1.ManagedFieldsOperationType, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
	}
	const (
		update = metav1.ManagedFieldsOperationUpdate
		apply  = metav1.ManagedFieldsOperationApply
	)
	created := entry(fleetv1.FieldManager, update, `{"f:metadata":{"f:labels":{".":{},"f:a":{},"f:gone":{},"f:theirs":{}},"f:annotations":{"f:x":{}}},"f:status":{}}`)
	for _, tc := range []struct {
		name    string
		entries []metav1.ManagedFieldsEntry
		want    []string
	}{
		{"created, never applied", []metav1.ManagedFieldsEntry{created}, nil},
		{"applied only", []metav1.ManagedFieldsEntry{entry(fleetv1.FieldManager, apply, `{"f:metadata":{"f:labels":{"f:a":{}}}}`)}, nil},
		{"applied after create", []metav1.ManagedFieldsEntry{
			created,
			entry(fleetv1.FieldManager, apply, `{"f:metadata":{"f:labels":{"f:a":{}}}}`),
			entry("platform-team", update, `{"f:metadata":{"f:labels":{"f:theirs":{}}}}`),
		}, []string{"gone"}},
		{"nothing left over", []metav1.ManagedFieldsEntry{
			created,
			entry(fleetv1.FieldManager, apply, `{"f:metadata":{"f:labels":{"f:a":{},"f:gone":{},"f:theirs":{}}}}`),
		}, nil},
		{"a status subresource entry is not the create", []metav1.ManagedFieldsEntry{
			{Manager: fleetv1.FieldManager, Operation: update, Subresource: "status", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{"f:s":{}}}}`)}},
			entry(fleetv1.FieldManager, apply, `{"f:metadata":{"f:labels":{"f:a":{}}}}`),
		}, nil},
		{"an entry that cannot be read owns nothing", []metav1.ManagedFieldsEntry{
			entry(fleetv1.FieldManager, update, `{"f:labels": not json`),
			entry(fleetv1.FieldManager, apply, `{"f:metadata":{"f:labels":{"f:a":{}}}}`),
		}, nil},
	} {
		got := leftoverLabels(tc.entries)
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
