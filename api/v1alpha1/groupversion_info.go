// Package v1alpha1 holds the fleet.nodemirror.io/v1alpha1 API: ManagedCluster,
// a member cluster the hub mirrors, and NodeSnapshot, the mirrored state of
// one of its nodes.
//
// +kubebuilder:object:generate=true
// +groupName=fleet.nodemirror.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "fleet.nodemirror.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
