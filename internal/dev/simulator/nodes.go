package simulator

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NewNode returns a Node as a kubelet would register it: ready, with
// capacity, addresses and system info.
func NewNode(name string, labels map[string]string) *corev1.Node {
	l := map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l},
		Status: corev1.NodeStatus{
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("110"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("3800m"), corev1.ResourceMemory: resource.MustParse("15Gi"), corev1.ResourcePods: resource.MustParse("110"),
			},
			Conditions: []corev1.NodeCondition{
				{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
				{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
			},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}, {Type: corev1.NodeHostName, Address: name}},
			NodeInfo: corev1.NodeSystemInfo{
				KubeletVersion: "v1.37.2", KubeProxyVersion: "v1.37.2", OSImage: "Debian GNU/Linux 12 (bookworm)", KernelVersion: "6.1.0-28-amd64",
				ContainerRuntimeVersion: "containerd://2.1.4", Architecture: "amd64", OperatingSystem: "linux",
			},
			Images: []corev1.ContainerImage{{Names: []string{"registry.k8s.io/pause:3.10"}, SizeBytes: 320000}},
		},
	}
}

// CreateNode registers a node with its status, as a kubelet does in two steps.
func CreateNode(ctx context.Context, cs kubernetes.Interface, node *corev1.Node) (*corev1.Node, error) {
	status := node.Status
	created, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	created.Status = status
	updated, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	// The API server taints new nodes not-ready until the node lifecycle
	// controller sees them Ready; there is no such controller here, so do
	// its part.
	var taints []corev1.Taint
	for _, t := range updated.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			taints = append(taints, t)
		}
	}
	if len(taints) == len(updated.Spec.Taints) {
		return updated, nil
	}
	updated.Spec.Taints = taints
	return cs.CoreV1().Nodes().Update(ctx, updated, metav1.UpdateOptions{})
}

// Heartbeat bumps the heartbeat times of a node's conditions, as a kubelet
// does every few seconds: a member write that changes nothing mirrored.
func Heartbeat(ctx context.Context, cs kubernetes.Interface, name string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	// Times are stored to the second: step past the last one so that every
	// heartbeat really is a write on the member.
	now := time.Now().Truncate(time.Second)
	for _, c := range node.Status.Conditions {
		if last := c.LastHeartbeatTime.Time; !now.After(last) {
			now = last.Add(time.Second)
		}
	}
	for i := range node.Status.Conditions {
		node.Status.Conditions[i].LastHeartbeatTime = metav1.NewTime(now)
	}
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// SetReady sets a node's Ready condition status.
func SetReady(ctx context.Context, cs kubernetes.Interface, name string, status corev1.ConditionStatus) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			node.Status.Conditions[i].Status = status
			node.Status.Conditions[i].LastTransitionTime = metav1.Now()
		}
	}
	_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// PatchLabel sets (or with value nil, removes) one label of a node.
func PatchLabel(ctx context.Context, cs kubernetes.Interface, name, key string, value *string) error {
	v := "null"
	if value != nil {
		v = fmt.Sprintf("%q", *value)
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%s}}}`, key, v)
	_, err := cs.CoreV1().Nodes().Patch(ctx, name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{})
	return err
}

// RealisticNode is NewNode dressed as a kubelet on a cloud VM registers
// itself: annotations, provider ID, pod CIDR, daemon endpoints and a few
// dozen cached images. Benchmarks compare snapshot sizes against it.
func RealisticNode(name string, labels map[string]string) *corev1.Node {
	n := NewNode(name, labels)
	n.Labels["beta.kubernetes.io/arch"] = "amd64"
	n.Labels["beta.kubernetes.io/os"] = "linux"
	n.Labels["node.kubernetes.io/instance-type"] = "m6i.2xlarge"
	n.Labels["topology.kubernetes.io/region"] = "eu-west-1"
	n.Labels["topology.kubernetes.io/zone"] = "eu-west-1a"
	n.Annotations = map[string]string{
		"node.alpha.kubernetes.io/ttl":                           "0",
		"volumes.kubernetes.io/controller-managed-attach-detach": "true",
		"csi.volume.kubernetes.io/nodeid":                        fmt.Sprintf(`{"ebs.csi.aws.com":"i-0%015x"}`, len(name)*7919),
		"alpha.kubernetes.io/provided-node-ip":                   "10.0.0.1",
	}
	n.Spec.ProviderID = "aws:///eu-west-1a/i-0" + fmt.Sprintf("%015x", len(name)*104729)
	n.Spec.PodCIDR = "10.244.1.0/24"
	n.Spec.PodCIDRs = []string{"10.244.1.0/24"}
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = 10250
	n.Status.NodeInfo.MachineID = fmt.Sprintf("ec2%029x", len(name))
	n.Status.NodeInfo.SystemUUID = fmt.Sprintf("ec2%05x-0000-0000-0000-%012x", len(name), len(name))
	n.Status.NodeInfo.BootID = fmt.Sprintf("%08x-1111-2222-3333-%012x", len(name), len(name))
	n.Status.Conditions = append(n.Status.Conditions,
		corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
		corev1.NodeCondition{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()},
	)
	n.Status.Addresses = append(n.Status.Addresses,
		corev1.NodeAddress{Type: corev1.NodeInternalDNS, Address: "ip-10-0-0-1.eu-west-1.compute.internal"})
	n.Status.Images = nil
	for i := range 30 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{
			Names: []string{
				fmt.Sprintf("registry.example.com/platform/component-%02d@sha256:%064x", i, i*2654435761),
				fmt.Sprintf("registry.example.com/platform/component-%02d:v1.%d.%d", i, i%7, i%13),
			},
			SizeBytes: int64(20_000_000 + i*3_000_000),
		})
	}
	return n
}
