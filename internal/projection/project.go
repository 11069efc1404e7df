package projection

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// Project returns the mirrored state of node under filter f.
func Project(node *corev1.Node, f Filter) fleetv1.NodeSnapshotStatus {
	st := fleetv1.NodeSnapshotStatus{
		Labels:                filterMap(node.Labels, f.KeepLabel),
		Annotations:           filterMap(node.Annotations, f.KeepAnnotation),
		Roles:                 Roles(node.Labels),
		Unschedulable:         node.Spec.Unschedulable,
		Taints:                node.Spec.Taints,
		Addresses:             node.Status.Addresses,
		Capacity:              node.Status.Capacity,
		Allocatable:           node.Status.Allocatable,
		NodeCreationTimestamp: node.CreationTimestamp,
		SourceResourceVersion: node.ResourceVersion,
		NodeInfo: fleetv1.NodeInfo{
			KubeletVersion:          node.Status.NodeInfo.KubeletVersion,
			KubeProxyVersion:        node.Status.NodeInfo.KubeProxyVersion, //nolint:staticcheck // still reported by many kubelets
			OSImage:                 node.Status.NodeInfo.OSImage,
			KernelVersion:           node.Status.NodeInfo.KernelVersion,
			ContainerRuntimeVersion: node.Status.NodeInfo.ContainerRuntimeVersion,
			Architecture:            node.Status.NodeInfo.Architecture,
			OperatingSystem:         node.Status.NodeInfo.OperatingSystem,
		},
	}
	if len(node.Status.Conditions) > 0 {
		st.Conditions = make([]fleetv1.NodeCondition, len(node.Status.Conditions))
		for i, c := range node.Status.Conditions {
			st.Conditions[i] = fleetv1.NodeCondition{
				Type:               c.Type,
				Status:             c.Status,
				Reason:             c.Reason,
				Message:            c.Message,
				LastTransitionTime: c.LastTransitionTime,
			}
		}
	}
	st.Summary = Summary(ReadyStatus(node), node.Spec.Unschedulable)
	st.InternalIP = InternalIP(node.Status.Addresses)
	st.RolesText = "<none>"
	if len(st.Roles) > 0 {
		st.RolesText = strings.Join(st.Roles, ",")
	}
	return st
}

// Digest hashes the mirrored state without its source resourceVersion, which
// moves on every heartbeat. Equal digests mean nothing mirrored changed.
func Digest(st *fleetv1.NodeSnapshotStatus) string {
	c := *st
	c.SourceResourceVersion = ""
	// encoding/json sorts map keys, so equal states encode equally.
	b, err := json.Marshal(&c)
	if err != nil {
		// Only unsupported values fail to encode; a status has none.
		panic(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// Roles lists the roles named by node-role.kubernetes.io/<role> labels, sorted.
func Roles(labels map[string]string) []string {
	var roles []string
	for k := range labels {
		if role, ok := strings.CutPrefix(k, RoleLabelPrefix); ok && role != "" {
			roles = append(roles, role)
		}
	}
	slices.Sort(roles)
	return roles
}

func isRoleLabel(key string) bool { return strings.HasPrefix(key, RoleLabelPrefix) }

// ReadyStatus is the status of the node's Ready condition, Unknown when it has none.
func ReadyStatus(node *corev1.Node) corev1.ConditionStatus {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// Summary is the STATUS column of `kubectl get nodes`.
func Summary(ready corev1.ConditionStatus, unschedulable bool) string {
	s := "Unknown"
	switch ready {
	case corev1.ConditionTrue:
		s = "Ready"
	case corev1.ConditionFalse:
		s = "NotReady"
	}
	if unschedulable {
		s += ",SchedulingDisabled"
	}
	return s
}

// InternalIP is the first InternalIP address, or "" when there is none.
func InternalIP(addrs []corev1.NodeAddress) string {
	for _, a := range addrs {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}
