package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ManagedClusterFinalizer holds a ManagedCluster until its session is stopped
// and its NodeSnapshots are gone.
const ManagedClusterFinalizer = "fleet.nodemirror.io/snapshots"

// DefaultKubeconfigKey is the Secret key read when kubeconfigSecretRef.key is empty.
const DefaultKubeconfigKey = "kubeconfig"

// KubeconfigSecretLabel marks a Secret as a member kubeconfig, with the
// value "true". The operator uses no other Secret: a ManagedCluster cannot
// make it read a Secret that was meant for something else.
const KubeconfigSecretLabel = "fleet.nodemirror.io/kubeconfig"

// ManagedClusterSpec says how to reach a member cluster and which of its
// node state to mirror.
// +kubebuilder:validation:XValidation:rule="!has(self.resyncPeriod) || duration(self.resyncPeriod) >= duration('1m')",message="resyncPeriod must be at least 1m"
type ManagedClusterSpec struct {
	// KubeconfigSecretRef names a Secret in the ManagedCluster's own
	// namespace that holds a kubeconfig for the member cluster; the Secret
	// must be labelled fleet.nodemirror.io/kubeconfig=true. Kubeconfigs
	// whose user runs an exec plugin or reads local files are refused unless
	// the operator allows them explicitly.
	// +required
	KubeconfigSecretRef SecretKeyRef `json:"kubeconfigSecretRef"`

	// NodeSelector is sent to the member API server with every list and
	// watch, so unselected nodes never cross the wire. Empty selects all nodes.
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="nodeSelector.matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"
	// +kubebuilder:validation:XValidation:rule="!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="nodeSelector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Mirror chooses which node labels and annotations are copied into the
	// NodeSnapshots. By default every label and no annotation is kept.
	// +optional
	Mirror MirrorSpec `json:"mirror,omitempty,omitzero"`

	// ResyncPeriod is how often the member informer re-delivers every node.
	// Re-deliveries that change nothing cause no hub writes.
	// +kubebuilder:default="30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +optional
	ResyncPeriod *metav1.Duration `json:"resyncPeriod,omitempty"`

	// Paused stops watching the member cluster and keeps the NodeSnapshots
	// as they were; status says so. A paused cluster is in the state it was
	// asked for: Ready is True with reason Paused (Connected Unknown and
	// Synced False, reason Paused), so kstatus computes Current and
	// `kubectl wait` and Flux do not wait for it forever; Argo CD's health
	// check (argocd/, see docs/argocd.md) says Suspended.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// SecretKeyRef names a key of a Secret in the same namespace. There are no
// cross-namespace references: the hub's namespace RBAC decides who may
// register a cluster.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +required
	Name string `json:"name"`

	// Key of the Secret that holds the kubeconfig.
	// +kubebuilder:default=kubeconfig
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	// +optional
	Key string `json:"key,omitempty"`
}

// MirrorSpec selects node metadata to mirror by key prefix.
type MirrorSpec struct {
	// Labels filters node labels. Omitted or with no include list, every
	// label is kept (less the excluded ones).
	// +optional
	Labels *KeyFilter `json:"labels,omitempty"`

	// Annotations filters node annotations. Omitted or with no include
	// list, no annotation is kept.
	// +optional
	Annotations *KeyFilter `json:"annotations,omitempty"`
}

// KeyFilter keeps the keys that start with one of the include prefixes and
// with none of the exclude prefixes. Exclusion wins.
type KeyFilter struct {
	// Include lists key prefixes to keep, e.g. "topology.kubernetes.io/".
	// An empty string keeps every key.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=317
	// +listType=set
	// +optional
	Include []string `json:"include,omitempty"`

	// Exclude lists key prefixes to drop, even when included.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=317
	// +listType=set
	// +optional
	Exclude []string `json:"exclude,omitempty"`
}

// ManagedClusterStatus is what the operator last observed of a member cluster.
// It holds no field that changes on a timer, but CredentialExpiring, which
// changes at most twice in a credential's life (the warning window opens,
// the credential expires).
//
// Health as kstatus (and so Flux) computes it: InProgress
// from the first read after create until the operator has observed the
// generation (the schema defaults status.observedGeneration to 0, which
// never equals metadata.generation), then InProgress while Reconciling is
// True (connecting, syncing, unreachable), Failed while Stalled is True
// (what retrying cannot fix: refused or unusable credentials, forbidden
// RBAC, an untrusted certificate), Current when Ready is True (mirroring,
// or paused as asked).
type ManagedClusterStatus struct {
	// ObservedGeneration is the spec generation this status describes;
	// 0 until the operator has looked at the ManagedCluster.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration"`

	// Conditions: Ready, Reconciling, Stalled, Connected, Synced.
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// KubernetesVersion is the member API server's version.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`

	// Nodes counts the mirrored nodes.
	// +optional
	Nodes NodeSummary `json:"nodes,omitempty,omitzero"`

	// Capacity sums the capacity of the mirrored nodes (cpu, memory, pods).
	// +optional
	Capacity corev1.ResourceList `json:"capacity,omitempty"`

	// Allocatable sums the allocatable resources of the mirrored nodes (cpu, memory, pods).
	// +optional
	Allocatable corev1.ResourceList `json:"allocatable,omitempty"`

	// Credential is what the operator can tell of the kubeconfig's
	// credential: its type and when it stops working. The
	// CredentialExpiring condition and a Warning Event say so ahead of
	// time (the operator's --credential-expiry-warning).
	// +optional
	Credential *MemberCredential `json:"credential,omitempty"`
}

// Types of a member credential (MemberCredential.Type).
const (
	CredentialTypeToken             = "Token"
	CredentialTypeClientCertificate = "ClientCertificate"
	CredentialTypeNone              = "None"
)

// MemberCredential describes the credential of a member kubeconfig.
type MemberCredential struct {
	// Type is Token or ClientCertificate; None for anything else (an exec
	// plugin's credential is not known before it runs).
	// +kubebuilder:validation:Enum=Token;ClientCertificate;None
	Type string `json:"type"`
	// ExpiresAt is a token's exp claim or a client certificate's notAfter;
	// unset when the credential does not expire (a legacy ServiceAccount
	// token) or its expiry cannot be read.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
}

// NodeSummary counts the mirrored nodes of a cluster.
type NodeSummary struct {
	// Total is the number of mirrored nodes.
	Total int32 `json:"total"`
	// Ready is the number whose Ready condition is True.
	Ready int32 `json:"ready"`
	// Unschedulable is the number that are cordoned.
	Unschedulable int32 `json:"unschedulable"`
}

// ManagedCluster is a member cluster whose nodes the hub mirrors into
// NodeSnapshots in the same namespace.
// The name is restricted to a DNS label (no dots, at most 63 characters):
// it is a label value on the cluster's NodeSnapshots and the part of their
// names before the first dot.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label (lowercase letters, digits and '-', at most 63 characters): it prefixes NodeSnapshot names and labels them"
// +kubebuilder:resource:shortName=mc,categories=nodemirror
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.conditions[?(@.type=="Connected")].status`
// +kubebuilder:printcolumn:name="Nodes",type=integer,JSONPath=`.status.nodes.total`
// +kubebuilder:printcolumn:name="Ready-Nodes",type=integer,JSONPath=`.status.nodes.ready`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.kubernetesVersion`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Credential-Expires",type=date,priority=1,JSONPath=`.status.credential.expiresAt`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`
type ManagedCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ManagedClusterSpec `json:"spec"`
	// +kubebuilder:default={observedGeneration: 0}
	// +optional
	Status ManagedClusterStatus `json:"status,omitempty,omitzero"`
}

// KubeconfigKey is the Secret key that holds the kubeconfig, defaulted.
func (c *ManagedCluster) KubeconfigKey() string {
	if c.Spec.KubeconfigSecretRef.Key == "" {
		return DefaultKubeconfigKey
	}
	return c.Spec.KubeconfigSecretRef.Key
}

// ManagedClusterList is a list of ManagedClusters.
// +kubebuilder:object:root=true
type ManagedClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ManagedCluster `json:"items"`
}

func init() {
	SchemeBuilder.Register(&ManagedCluster{}, &ManagedClusterList{})
}
