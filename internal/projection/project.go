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
	st.Columns = Columns(node)
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

// Roles lists a node's roles as kubectl finds them: the names of its
// node-role.kubernetes.io/<role> labels and the value of its legacy
// kubernetes.io/role label, sorted, without duplicates.
func Roles(labels map[string]string) []string {
	var roles []string
	for k, v := range labels {
		if role, ok := strings.CutPrefix(k, RoleLabelPrefix); ok && role != "" {
			roles = append(roles, role)
		} else if k == LegacyRoleLabel && v != "" {
			roles = append(roles, v)
		}
	}
	slices.Sort(roles)
	return slices.Compact(roles)
}

// ReadyStatus is the status of the node's Ready condition, "" when it has none.
func ReadyStatus(node *corev1.Node) corev1.ConditionStatus {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// Columns are the cells `kubectl get nodes -o wide` prints for node, with
// kubectl's rules (k8s.io/kubernetes/pkg/printers/internalversion printNode).
func Columns(node *corev1.Node) fleetv1.NodeColumns {
	info := node.Status.NodeInfo
	kernel := orUnknown(info.KernelVersion)
	if info.Architecture != "" {
		kernel += " (" + info.Architecture + ")"
	}
	roles := strings.Join(Roles(node.Labels), ",")
	if roles == "" {
		roles = "<none>"
	}
	return fleetv1.NodeColumns{
		Status:           Status(ReadyStatus(node), node.Spec.Unschedulable),
		Roles:            roles,
		Version:          info.KubeletVersion,
		InternalIP:       firstAddress(node.Status.Addresses, corev1.NodeInternalIP),
		ExternalIP:       firstAddress(node.Status.Addresses, corev1.NodeExternalIP),
		OSImage:          orUnknown(info.OSImage),
		KernelVersion:    kernel,
		ContainerRuntime: orUnknown(info.ContainerRuntimeVersion),
	}
}

// Status is the STATUS cell of `kubectl get nodes` for a node whose Ready
// condition has status ready ("" when it has none): any status but True is
// NotReady, and only a missing condition is Unknown.
func Status(ready corev1.ConditionStatus, unschedulable bool) string {
	var s string
	switch ready {
	case corev1.ConditionTrue:
		s = "Ready"
	case "":
		s = "Unknown"
	default:
		s = "NotReady"
	}
	if unschedulable {
		s += ",SchedulingDisabled"
	}
	return s
}

func firstAddress(addrs []corev1.NodeAddress, t corev1.NodeAddressType) string {
	for _, a := range addrs {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

func orUnknown(s string) string {
	if s == "" {
		return "<unknown>"
	}
	return s
}
