package projection

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// Transform returns an informer transform that strips a Node down to what
// Project reads before the informer caches it: no managedFields, no
// unmirrored labels (role labels stay, they give the roles), no unmirrored
// annotations, no images, volumes or daemon endpoints, no heartbeat times.
// A member cluster's nodes then cost the operator a fraction of their size.
func Transform(f Filter) cache.TransformFunc {
	return func(obj any) (any, error) {
		node, ok := obj.(*corev1.Node)
		if !ok {
			// Tombstones (DeletedFinalStateUnknown) and anything else pass through.
			return obj, nil
		}
		return StripNode(node, f), nil
	}
}

// StripNode returns a copy of node holding only what Project reads.
func StripNode(node *corev1.Node, f Filter) *corev1.Node {
	out := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:              node.Name,
			UID:               node.UID,
			ResourceVersion:   node.ResourceVersion,
			CreationTimestamp: node.CreationTimestamp,
			DeletionTimestamp: node.DeletionTimestamp,
			Labels: filterMap(node.Labels, func(k string) bool {
				return f.KeepLabel(k) || isRoleLabel(k)
			}),
			Annotations: filterMap(node.Annotations, f.KeepAnnotation),
		},
		Spec: corev1.NodeSpec{
			Unschedulable: node.Spec.Unschedulable,
			Taints:        node.Spec.Taints,
		},
		Status: corev1.NodeStatus{
			Capacity:    node.Status.Capacity,
			Allocatable: node.Status.Allocatable,
			Addresses:   node.Status.Addresses,
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion:          node.Status.NodeInfo.KubeletVersion,
				KubeProxyVersion:        node.Status.NodeInfo.KubeProxyVersion, //nolint:staticcheck // still reported by many kubelets
				OSImage:                 node.Status.NodeInfo.OSImage,
				KernelVersion:           node.Status.NodeInfo.KernelVersion,
				ContainerRuntimeVersion: node.Status.NodeInfo.ContainerRuntimeVersion,
				Architecture:            node.Status.NodeInfo.Architecture,
				OperatingSystem:         node.Status.NodeInfo.OperatingSystem,
			},
		},
	}
	if len(node.Status.Conditions) > 0 {
		out.Status.Conditions = make([]corev1.NodeCondition, len(node.Status.Conditions))
		for i, c := range node.Status.Conditions {
			c.LastHeartbeatTime = metav1.Time{}
			out.Status.Conditions[i] = c
		}
	}
	return out
}
