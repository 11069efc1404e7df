package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations the operator puts on every NodeSnapshot.
const (
	// ClusterLabel names the ManagedCluster a snapshot belongs to.
	ClusterLabel = "fleet.nodemirror.io/cluster"
	// DigestAnnotation holds a hash of the mirrored state, so that the
	// operator can tell an unchanged node from a changed one without
	// comparing whole objects.
	DigestAnnotation = "fleet.nodemirror.io/digest"
	// NodeNameAnnotation holds spec.nodeName where a metadata-only list can
	// read it: a snapshot's name may be a hash (see NodeSnapshot), so the
	// operator never derives the node from the name.
	NodeNameAnnotation = "fleet.nodemirror.io/node-name"
)

// NodeSnapshotSpec names the member node a snapshot mirrors. It never changes.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: a NodeSnapshot always mirrors the same node"
type NodeSnapshotSpec struct {
	// ClusterName is the ManagedCluster, in the same namespace, the node belongs to.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	ClusterName string `json:"clusterName"`
	// NodeName is the name of the node in its member cluster.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +required
	NodeName string `json:"nodeName"`
}

// NodeSnapshotStatus is the filtered state of a member node. Heartbeat times
// are never mirrored, so a node that only heartbeats leaves it unchanged.
type NodeSnapshotStatus struct {
	// Labels are the node's labels that pass the cluster's mirror filter.
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are the node's annotations that pass the mirror filter.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// Roles come from the node's node-role.kubernetes.io/<role> labels and
	// its legacy kubernetes.io/role label, as kubectl finds them.
	// +listType=set
	// +optional
	Roles []string `json:"roles,omitempty"`
	// Unschedulable is true when the node is cordoned.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Taints of the node.
	// +listType=atomic
	// +optional
	Taints []corev1.Taint `json:"taints,omitempty"`
	// Conditions of the node, without heartbeat times.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []NodeCondition `json:"conditions,omitempty"`
	// Addresses of the node.
	// +listType=atomic
	// +optional
	Addresses []corev1.NodeAddress `json:"addresses,omitempty"`
	// Capacity of the node.
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`
	// Allocatable resources of the node.
	// +optional
	Allocatable corev1.ResourceList `json:"allocatable,omitempty"`
	// NodeInfo: versions, OS, kernel, runtime and architecture.
	// +optional
	NodeInfo NodeInfo `json:"nodeInfo,omitempty,omitzero"`
	// NodeCreationTimestamp is when the node was created in its member cluster.
	// +optional
	NodeCreationTimestamp metav1.Time `json:"nodeCreationTimestamp,omitempty,omitzero"`
	// SourceResourceVersion is the member resourceVersion of the node state
	// last mirrored. Updates that change nothing mirrored do not move it.
	// +optional
	SourceResourceVersion string `json:"sourceResourceVersion,omitempty"`
	// Columns are the node's cells of `kubectl get nodes -o wide`, worked
	// out as kubectl works them out, for the printer columns and the UI.
	// +optional
	Columns NodeColumns `json:"columns,omitzero"`
}

// NodeColumns are the cells `kubectl get nodes -o wide` prints for a node,
// string for string: an empty value is printed the way kubectl prints it
// (`<none>`, `<unknown>` or nothing), never left to the printer.
type NodeColumns struct {
	// Status is Ready, NotReady (the Ready condition is False or Unknown) or
	// Unknown (no Ready condition), with ",SchedulingDisabled" when cordoned.
	Status string `json:"status"`
	// Roles are the node-role.kubernetes.io/<role> label names and the
	// kubernetes.io/role label value, sorted and joined by commas, or <none>.
	Roles string `json:"roles"`
	// Version is the kubelet version, empty when the node reports none.
	Version string `json:"version"`
	// InternalIP and ExternalIP are the first address of their type, or <none>.
	InternalIP string `json:"internalIP"`
	ExternalIP string `json:"externalIP"`
	// OSImage, KernelVersion and ContainerRuntime come from the node info,
	// <unknown> when empty; the kernel is followed by " (<architecture>)"
	// when the architecture is known.
	OSImage          string `json:"osImage"`
	KernelVersion    string `json:"kernelVersion"`
	ContainerRuntime string `json:"containerRuntime"`
}

// NodeCondition is a node condition without its heartbeat time.
type NodeCondition struct {
	// Type of the condition, e.g. Ready.
	Type corev1.NodeConditionType `json:"type"`
	// Status: True, False or Unknown.
	Status corev1.ConditionStatus `json:"status"`
	// Reason is a one-word cause.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says more.
	// +optional
	Message string `json:"message,omitempty"`
	// LastTransitionTime is when the status last changed.
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty,omitzero"`
}

// NodeInfo is the part of the node's system info worth mirroring.
type NodeInfo struct {
	KubeletVersion          string `json:"kubeletVersion,omitempty"`
	KubeProxyVersion        string `json:"kubeProxyVersion,omitempty"`
	OSImage                 string `json:"osImage,omitempty"`
	KernelVersion           string `json:"kernelVersion,omitempty"`
	ContainerRuntimeVersion string `json:"containerRuntimeVersion,omitempty"`
	Architecture            string `json:"architecture,omitempty"`
	OperatingSystem         string `json:"operatingSystem,omitempty"`
}

// NodeSnapshot is the mirrored state of one member node, named
// <cluster>.<node>. Only the operator writes it, so its status lives in the
// main resource: one create carries the whole state.
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=nodemirror
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.clusterName`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.columns.status`
// +kubebuilder:printcolumn:name="Roles",type=string,JSONPath=`.status.columns.roles`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.columns.version`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.status.nodeCreationTimestamp`
// +kubebuilder:printcolumn:name="Internal-IP",type=string,priority=1,JSONPath=`.status.columns.internalIP`
// +kubebuilder:printcolumn:name="External-IP",type=string,priority=1,JSONPath=`.status.columns.externalIP`
// +kubebuilder:printcolumn:name="OS-Image",type=string,priority=1,JSONPath=`.status.columns.osImage`
// +kubebuilder:printcolumn:name="Kernel-Version",type=string,priority=1,JSONPath=`.status.columns.kernelVersion`
// +kubebuilder:printcolumn:name="Container-Runtime",type=string,priority=1,JSONPath=`.status.columns.containerRuntime`
// +kubebuilder:printcolumn:name="CPU",type=string,priority=1,JSONPath=`.status.allocatable.cpu`
// +kubebuilder:printcolumn:name="Memory",type=string,priority=1,JSONPath=`.status.allocatable.memory`
type NodeSnapshot struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec NodeSnapshotSpec `json:"spec"`
	// +optional
	Status NodeSnapshotStatus `json:"status,omitempty,omitzero"`
}

// NodeSnapshotList is a list of NodeSnapshots.
// +kubebuilder:object:root=true
type NodeSnapshotList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeSnapshot `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeSnapshot{}, &NodeSnapshotList{})
}
