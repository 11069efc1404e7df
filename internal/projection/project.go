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

// Project returns the mirrored state of node under filter f, within the
// caps of limits.go.
func Project(node *corev1.Node, f Filter) fleetv1.NodeSnapshotStatus {
	var c capper
	info := node.Status.NodeInfo
	st := fleetv1.NodeSnapshotStatus{
		Labels:                c.kv("labels", filterMap(node.Labels, f.KeepLabel), MaxLabels, MaxLabelBytes, MaxLabelValue),
		Annotations:           c.kv("annotations", filterMap(node.Annotations, f.KeepAnnotation), MaxAnnotations, MaxAnnotationBytes, MaxAnnotationValue),
		Roles:                 c.roles(Roles(node.Labels)),
		Unschedulable:         node.Spec.Unschedulable,
		Taints:                c.taints(node.Spec.Taints),
		Addresses:             c.addresses(node.Status.Addresses),
		Capacity:              c.resources("capacity", node.Status.Capacity),
		Allocatable:           c.resources("allocatable", node.Status.Allocatable),
		NodeCreationTimestamp: node.CreationTimestamp,
		SourceResourceVersion: c.str("sourceResourceVersion", node.ResourceVersion, MaxVersion),
		NodeInfo: fleetv1.NodeInfo{
			KubeletVersion:          c.str("nodeInfo.kubeletVersion", info.KubeletVersion, MaxVersion),
			KubeProxyVersion:        c.str("nodeInfo.kubeProxyVersion", info.KubeProxyVersion, MaxVersion), //nolint:staticcheck // still reported by many kubelets
			OSImage:                 c.str("nodeInfo.osImage", info.OSImage, MaxInfo),
			KernelVersion:           c.str("nodeInfo.kernelVersion", info.KernelVersion, MaxInfo),
			ContainerRuntimeVersion: c.str("nodeInfo.containerRuntimeVersion", info.ContainerRuntimeVersion, MaxInfo),
			Architecture:            c.str("nodeInfo.architecture", info.Architecture, MaxVersion),
			OperatingSystem:         c.str("nodeInfo.operatingSystem", info.OperatingSystem, MaxVersion),
		},
	}
	conds := node.Status.Conditions
	if len(conds) > MaxConditions {
		c.cut("conditions")
		conds = conds[:MaxConditions]
	}
	for _, nc := range conds {
		if len(nc.Type) > MaxKeyLength || len(nc.Status) > 16 {
			c.cut("conditions")
			continue
		}
		st.Conditions = append(st.Conditions, fleetv1.NodeCondition{
			Type:               nc.Type,
			Status:             nc.Status,
			Reason:             c.str("conditions["+string(nc.Type)+"].reason", nc.Reason, MaxReason),
			Message:            c.str("conditions["+string(nc.Type)+"].message", nc.Message, MaxMessage),
			LastTransitionTime: nc.LastTransitionTime,
		})
	}
	// The columns are worked out from the capped values, as stored. This
	// runs on every node update, heartbeats included: a Node of just the
	// parts columns reads, not a copy of the whole Node.
	st.Columns = columns(&corev1.Node{
		Spec: corev1.NodeSpec{Unschedulable: node.Spec.Unschedulable},
		Status: corev1.NodeStatus{
			Conditions: node.Status.Conditions,
			Addresses:  st.Addresses,
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion: st.NodeInfo.KubeletVersion, OSImage: st.NodeInfo.OSImage, KernelVersion: st.NodeInfo.KernelVersion,
				ContainerRuntimeVersion: st.NodeInfo.ContainerRuntimeVersion, Architecture: st.NodeInfo.Architecture,
			},
		},
	}, st.Roles)
	st.Truncated = c.truncated
	return st
}

// roles caps the number of roles and their names.
func (c *capper) roles(roles []string) []string {
	if len(roles) > MaxRoles {
		c.cut("roles")
		roles = roles[:MaxRoles]
	}
	for i, r := range roles {
		roles[i] = c.str("roles", r, MaxLabelValue)
	}
	return slices.Compact(roles)
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
func Columns(node *corev1.Node) fleetv1.NodeColumns { return columns(node, Roles(node.Labels)) }

func columns(node *corev1.Node, nodeRoles []string) fleetv1.NodeColumns {
	info := node.Status.NodeInfo
	kernel := orUnknown(info.KernelVersion)
	if info.Architecture != "" {
		kernel += " (" + info.Architecture + ")"
	}
	roles := strings.Join(nodeRoles, ",")
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
