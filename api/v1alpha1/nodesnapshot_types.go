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
	// ReservedPrefix is the label and annotation prefix the operator owns.
	// Mirrored node labels are copied to a snapshot's metadata.labels, so
	// that kubectl -l selects snapshots by node label, except those with
	// this prefix: a member node cannot make itself look like another
	// cluster's. They stay in status.labels.
	ReservedPrefix = "fleet.nodemirror.io/"
	// FieldManager is the server-side apply field manager of the
	// operator's snapshot writes. Labels and annotations other managers
	// add to a snapshot are theirs and stay.
	FieldManager = "nodemirror-operator"
)

// Size limits of a NodeSnapshot, enforced by the schema and applied by the
// operator, which cuts what a member reports to fit and names the cut in
// status.truncated. The markers below repeat these numbers.
const (
	MaxSnapshotLabels      = 256
	MaxSnapshotAnnotations = 64
	MaxConditionMessage    = 1024
	MaxVersionLength       = 64
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

// The status is one atomic value for server-side apply: the operator is its
// only writer and always writes it whole, so the API server need not track
// it field by field in managedFields (a third of each snapshot's bytes) nor
// merge it, which was a sixth of the hub's CPU per snapshot write.
// +structType=atomic

// NodeSnapshotStatus is the filtered state of a member node. Heartbeat times
// are never mirrored, so a node that only heartbeats leaves it unchanged.
type NodeSnapshotStatus struct {
	// Labels are the node's labels that pass the cluster's mirror filter.
	// +kubebuilder:validation:MaxProperties=256
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && size(self[k]) <= 63)",message="label keys are at most 317 bytes and values at most 63"
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are the node's annotations that pass the mirror filter.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && size(self[k]) <= 4096)",message="annotation keys are at most 317 bytes and values at most 4096"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// Roles come from the node's node-role.kubernetes.io/<role> labels and
	// its legacy kubernetes.io/role label, as kubectl finds them.
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=63
	// +optional
	Roles []string `json:"roles,omitempty"`
	// Unschedulable is true when the node is cordoned.
	// +optional
	Unschedulable bool `json:"unschedulable,omitempty"`
	// Taints of the node.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(t, size(t.key) <= 317 && (!has(t.value) || size(t.value) <= 63))",message="taint keys are at most 317 bytes and values at most 63"
	// +optional
	Taints []corev1.Taint `json:"taints,omitempty"`
	// Conditions of the node, without heartbeat times.
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(c, size(c.type) <= 317 && size(c.status) <= 16)",message="condition types are at most 317 bytes"
	// +optional
	Conditions []NodeCondition `json:"conditions,omitempty"`
	// Addresses of the node.
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:XValidation:rule="self.all(a, size(a.address) <= 253 && size(a.type) <= 32)",message="addresses are at most 253 bytes"
	// +optional
	Addresses []corev1.NodeAddress `json:"addresses,omitempty"`
	// Capacity of the node.
	// +kubebuilder:validation:MaxProperties=32
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`
	// Allocatable resources of the node.
	// +kubebuilder:validation:MaxProperties=32
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
	// +kubebuilder:validation:MaxLength=64
	// +optional
	SourceResourceVersion string `json:"sourceResourceVersion,omitempty"`
	// Truncated names what did not fit the snapshot's size limits and was
	// cut or left out: e.g. "labels", "conditions[Ready].message",
	// "nodeInfo.kubeletVersion". Empty when the snapshot is whole.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=400
	// +listType=atomic
	// +optional
	Truncated []string `json:"truncated,omitempty"`
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
	// +kubebuilder:validation:MaxLength=64
	Status string `json:"status"`
	// Roles are the node-role.kubernetes.io/<role> label names and the
	// kubernetes.io/role label value, sorted and joined by commas, or <none>.
	// +kubebuilder:validation:MaxLength=1100
	Roles string `json:"roles"`
	// Version is the kubelet version, empty when the node reports none.
	// +kubebuilder:validation:MaxLength=64
	Version string `json:"version"`
	// InternalIP and ExternalIP are the first address of their type, or <none>.
	// +kubebuilder:validation:MaxLength=253
	InternalIP string `json:"internalIP"`
	// +kubebuilder:validation:MaxLength=253
	ExternalIP string `json:"externalIP"`
	// OSImage, KernelVersion and ContainerRuntime come from the node info,
	// <unknown> when empty; the kernel is followed by " (<architecture>)"
	// when the architecture is known.
	// +kubebuilder:validation:MaxLength=128
	OSImage string `json:"osImage"`
	// +kubebuilder:validation:MaxLength=200
	KernelVersion string `json:"kernelVersion"`
	// +kubebuilder:validation:MaxLength=128
	ContainerRuntime string `json:"containerRuntime"`
}

// NodeCondition is a node condition without its heartbeat time.
type NodeCondition struct {
	// Type of the condition, e.g. Ready.
	Type corev1.NodeConditionType `json:"type"`
	// Status: True, False or Unknown.
	Status corev1.ConditionStatus `json:"status"`
	// Reason is a one-word cause.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says more.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Message string `json:"message,omitempty"`
	// LastTransitionTime is when the status last changed.
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty,omitzero"`
}

// NodeInfo is the part of the node's system info worth mirroring.
type NodeInfo struct {
	// +kubebuilder:validation:MaxLength=64
	KubeletVersion string `json:"kubeletVersion,omitempty"`
	// +kubebuilder:validation:MaxLength=64
	KubeProxyVersion string `json:"kubeProxyVersion,omitempty"`
	// +kubebuilder:validation:MaxLength=128
	OSImage string `json:"osImage,omitempty"`
	// +kubebuilder:validation:MaxLength=128
	KernelVersion string `json:"kernelVersion,omitempty"`
	// +kubebuilder:validation:MaxLength=128
	ContainerRuntimeVersion string `json:"containerRuntimeVersion,omitempty"`
	// +kubebuilder:validation:MaxLength=64
	Architecture string `json:"architecture,omitempty"`
	// +kubebuilder:validation:MaxLength=64
	OperatingSystem string `json:"operatingSystem,omitempty"`
}

// NodeSnapshot is the mirrored state of one member node, named
// <cluster>.<node>. Only the operator writes its spec and status, so its
// status lives in the main resource: one write carries the whole state.
// Its metadata.labels carry the cluster label and the mirrored node labels
// (see ReservedPrefix), so `kubectl get nsnap -l node-role.kubernetes.io/worker`
// and `--field-selector spec.clusterName=east` both work.
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=nsnap,categories=nodemirror
// +kubebuilder:selectablefield:JSONPath=`.spec.clusterName`
// +kubebuilder:selectablefield:JSONPath=`.spec.nodeName`
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
