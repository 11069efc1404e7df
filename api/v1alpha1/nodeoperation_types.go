package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeOperationFinalizer holds a NodeOperation until the operator has
// stopped its steps in flight, so that deleting a running operation stops
// it: no new steps start, what is done stays done.
const NodeOperationFinalizer = "fleet.nodemirror.io/node-operation"

// NodeOperationRequesterAnnotation records who created a NodeOperation,
// when the hub stamps it (config/samples/requester-policy.yaml, a
// MutatingAdmissionPolicy). The hub's audit log is the record otherwise.
const NodeOperationRequesterAnnotation = "fleet.nodemirror.io/requested-by"

// Limits of a NodeOperation, enforced by the schema.
const (
	// MaxNodeOperationResults bounds status.results, so that the status of
	// an operation over thousands of nodes stays far below an object's size
	// limit: past it, results are kept for the nodes that are not done or
	// did not succeed first, and status.omittedResults counts the rest
	// (every count in status.counts stays exact).
	MaxNodeOperationResults = 1000
	// MaxNodeOperationMessage bounds a result's message.
	MaxNodeOperationMessage = 512
)

// NodeAction is what a NodeOperation does to each node.
// +kubebuilder:validation:Enum=cordon;uncordon;drain;label;unlabel;taint;untaint
type NodeAction string

// Node actions, named as kubectl names them.
const (
	ActionCordon   NodeAction = "cordon"
	ActionUncordon NodeAction = "uncordon"
	ActionDrain    NodeAction = "drain"
	ActionLabel    NodeAction = "label"
	ActionUnlabel  NodeAction = "unlabel"
	ActionTaint    NodeAction = "taint"
	ActionUntaint  NodeAction = "untaint"
)

// NodeOperationSpec says which nodes of which clusters to act on, and how.
// It cannot change once created: create another operation instead.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new NodeOperation instead"
// +kubebuilder:validation:XValidation:rule="self.action == 'label' ? has(self.labels) && size(self.labels) > 0 : !has(self.labels)",message="labels is required for action label and allowed for no other action"
// +kubebuilder:validation:XValidation:rule="self.action == 'unlabel' ? has(self.labelKeys) && size(self.labelKeys) > 0 : !has(self.labelKeys)",message="labelKeys is required for action unlabel and allowed for no other action"
// +kubebuilder:validation:XValidation:rule="self.action == 'taint' ? has(self.taints) && size(self.taints) > 0 : !has(self.taints)",message="taints is required for action taint and allowed for no other action"
// +kubebuilder:validation:XValidation:rule="self.action == 'untaint' ? has(self.taintKeys) && size(self.taintKeys) > 0 : !has(self.taintKeys)",message="taintKeys is required for action untaint and allowed for no other action"
// +kubebuilder:validation:XValidation:rule="self.action == 'drain' || !has(self.drain)",message="drain options are allowed for action drain only"
type NodeOperationSpec struct {
	// Clusters chooses ManagedClusters in the operation's own namespace:
	// by name, or by a label selector over the ManagedClusters' labels.
	// +required
	Clusters ClusterTargets `json:"clusters"`

	// Nodes chooses nodes of those clusters: by name, or by a label
	// selector over the mirrored node labels (an empty selector chooses
	// every mirrored node).
	// +required
	Nodes NodeTargets `json:"nodes"`

	// Action is what to do to each node.
	// +required
	Action NodeAction `json:"action"`

	// Labels to set, for action label; a label already there with the same
	// value is success.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Labels map[string]string `json:"labels,omitempty"`

	// LabelKeys to remove, for action unlabel; a label already gone is success.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=317
	// +listType=set
	// +optional
	LabelKeys []string `json:"labelKeys,omitempty"`

	// Taints to add or update (by key and effect), for action taint.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Taints []NodeTaint `json:"taints,omitempty"`

	// TaintKeys to remove, for action untaint: every taint with the key,
	// or only the one with the effect if given.
	// +kubebuilder:validation:MaxItems=32
	// +optional
	TaintKeys []TaintKey `json:"taintKeys,omitempty"`

	// Drain tunes action drain.
	// +optional
	Drain *DrainOptions `json:"drain,omitempty"`

	// MaxConcurrent is how many nodes of one cluster are acted on at once.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	MaxConcurrent int32 `json:"maxConcurrent,omitempty"`

	// DryRun resolves the targets and reports, per node, what would be
	// done, without changing any member.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`

	// TTLSecondsAfterFinished deletes the operation this long after it
	// finished; unset keeps it.
	// +kubebuilder:validation:Minimum=0
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`
}

// ClusterTargets chooses ManagedClusters of the namespace: exactly one of
// names and selector.
// +kubebuilder:validation:XValidation:rule="has(self.names) != has(self.selector)",message="give exactly one of clusters.names and clusters.selector"
type ClusterTargets struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=500
	// +kubebuilder:validation:items:MaxLength=63
	// +listType=set
	// +optional
	Names []string `json:"names,omitempty"`
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// NodeTargets chooses nodes of the chosen clusters: exactly one of names
// and selector.
// +kubebuilder:validation:XValidation:rule="has(self.names) != has(self.selector)",message="give exactly one of nodes.names and nodes.selector"
type NodeTargets struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5000
	// +kubebuilder:validation:items:MaxLength=253
	// +listType=set
	// +optional
	Names []string `json:"names,omitempty"`
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
}

// NodeTaint is a taint to put on a node.
type NodeTaint struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +required
	Key string `json:"key"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Value string `json:"value,omitempty"`
	// +kubebuilder:validation:Enum=NoSchedule;PreferNoSchedule;NoExecute
	// +required
	Effect corev1.TaintEffect `json:"effect"`
}

// TaintKey names taints to remove.
type TaintKey struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +required
	Key string `json:"key"`
	// Effect, if given, removes only the taint with this effect.
	// +kubebuilder:validation:Enum=NoSchedule;PreferNoSchedule;NoExecute
	// +optional
	Effect corev1.TaintEffect `json:"effect,omitempty"`
}

// DrainOptions are kubectl drain's, but that pods always leave through the
// Eviction API (PodDisruptionBudgets hold) and are never deleted.
type DrainOptions struct {
	// GracePeriodSeconds given to each evicted pod; unset uses the pod's own.
	// +kubebuilder:validation:Minimum=0
	// +optional
	GracePeriodSeconds *int64 `json:"gracePeriodSeconds,omitempty"`
	// Timeout for one node's drain, counted from the node's start:
	// evictions refused by a PodDisruptionBudget are retried until then
	// (the node's result then names the pods and budgets that held), and
	// evicted pods are waited for until then (the node's result then
	// names the pods still terminating).
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// SkipWaitForDeleteTimeout is kubectl drain's
	// --skip-wait-for-delete-timeout: a terminating pod whose
	// deletionTimestamp is more than this in the past is not waited for
	// (the node's result counts it); 0s waits for every pod. Unset: on a
	// node whose Ready condition is True every pod is waited for, as
	// kubectl does; on a node that is not Ready, a pod whose
	// deletionTimestamp is more than 1m in the past is not waited for,
	// since no kubelet there can confirm its deletion and it would stay
	// Terminating until the timeout.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	SkipWaitForDeleteTimeout *metav1.Duration `json:"skipWaitForDeleteTimeout,omitempty"`
	// DeleteEmptyDirData evicts pods that use emptyDir volumes (their data
	// is lost); without it such pods stop the node's drain.
	// +optional
	DeleteEmptyDirData bool `json:"deleteEmptyDirData,omitempty"`
	// IgnoreDaemonSets leaves DaemonSet pods in place; without it they stop
	// the node's drain, as in kubectl.
	// +optional
	IgnoreDaemonSets bool `json:"ignoreDaemonSets,omitempty"`
	// Force evicts pods that no controller manages (they are not
	// recreated); without it such pods stop the node's drain.
	// +optional
	Force bool `json:"force,omitempty"`
}

// Phases of a NodeOperation and of each node's result.
const (
	// OperationPending: not started yet (targets not resolved, or the
	// node waits for a place under maxConcurrent).
	OperationPending = "Pending"
	// OperationRunning: steps are in flight.
	OperationRunning = "Running"
	// OperationSucceeded: every node done.
	OperationSucceeded = "Succeeded"
	// OperationFailed: done, and some node failed.
	OperationFailed = "Failed"
	// OperationSkipped: a node result only: nothing to do (dry run), or
	// the node's cluster could not be acted on (see the message).
	OperationSkipped = "Skipped"
)

// NodeOperationStatus is the progress of an operation.
type NodeOperationStatus struct {
	// ObservedGeneration is the generation this status describes; 0 until
	// the operator has looked at the operation.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration"`
	// Phase is Pending, Running, Succeeded or Failed.
	// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed
	// +optional
	Phase string `json:"phase,omitempty"`
	// Targets is a short, human form of what the operation acts on, for
	// kubectl get (e.g. "3 clusters, 120 nodes").
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Targets string `json:"targets,omitempty"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Counts are exact, whatever results holds.
	// +optional
	Counts NodeOperationCounts `json:"counts,omitempty,omitzero"`
	// Results per node, at most MaxNodeOperationResults (see
	// OmittedResults).
	// +kubebuilder:validation:MaxItems=1000
	// +listType=map
	// +listMapKey=cluster
	// +listMapKey=node
	// +optional
	Results []NodeResult `json:"results,omitempty"`
	// OmittedResults counts the nodes whose result is not in results.
	// +optional
	OmittedResults int32 `json:"omittedResults,omitempty"`
	// Conditions: Ready (True once Succeeded), Reconciling (True while
	// running), Stalled (True once Failed), as kstatus reads them.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeOperationCounts count the targeted nodes by phase.
type NodeOperationCounts struct {
	Total     int32 `json:"total"`
	Pending   int32 `json:"pending"`
	Running   int32 `json:"running"`
	Succeeded int32 `json:"succeeded"`
	Failed    int32 `json:"failed"`
	Skipped   int32 `json:"skipped"`
}

// NodeResult is the outcome for one node.
type NodeResult struct {
	// +kubebuilder:validation:MaxLength=63
	// +required
	Cluster string `json:"cluster"`
	// +kubebuilder:validation:MaxLength=253
	// +required
	Node string `json:"node"`
	// Phase is Pending, Running, Succeeded, Failed or Skipped.
	// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Skipped
	// +required
	Phase string `json:"phase"`
	// Reason is a CamelCase word for machines (e.g. Forbidden,
	// DisruptionBudget, ClusterPaused, ClusterDisconnected, NodeNotFound).
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says what happened, for people.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// NodeOperation acts on member nodes from the hub: cordon, uncordon,
// drain, label, unlabel, taint or untaint, across clusters, with the
// member credentials the operator holds and under the hub's RBAC on
// nodeoperations. It acts only on the ManagedClusters of its own
// namespace.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=nodeop,categories=nodemirror
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.spec.action`
// +kubebuilder:printcolumn:name="Targets",type=string,JSONPath=`.status.targets`
// +kubebuilder:printcolumn:name="Succeeded",type=integer,JSONPath=`.status.counts.succeeded`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.counts.failed`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeOperation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec NodeOperationSpec `json:"spec"`
	// +kubebuilder:default={observedGeneration: 0}
	// +optional
	Status NodeOperationStatus `json:"status,omitempty,omitzero"`
}

// +kubebuilder:object:root=true

// NodeOperationList is a list of NodeOperations.
type NodeOperationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeOperation `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeOperation{}, &NodeOperationList{})
}
