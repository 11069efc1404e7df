package session

import (
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/projection"
)

// mirroredNode is all the session's informer keeps of a member node: its
// name and resourceVersion, the digest of its projection, the few values
// the cluster summary adds up, and, only until it is written, the
// projection itself. A node whose snapshot is up to date costs a few
// hundred bytes, whatever the size of the Node.
type mirroredNode struct {
	metav1.ObjectMeta // Name and ResourceVersion only
	digest            string
	summary           nodeSummary
	// pending is the projection still to be written, nil once written.
	pending atomic.Pointer[fleetv1.NodeSnapshotStatus]
}

// nodeSummary is what a node adds to its ManagedCluster's status.
type nodeSummary struct {
	ready, unschedulable bool
	// cpu in millicores, memory in bytes, pods.
	capacity, allocatable [3]int64
}

var _ runtime.Object = &mirroredNode{}

func (m *mirroredNode) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

func (m *mirroredNode) DeepCopyObject() runtime.Object {
	c := &mirroredNode{digest: m.digest, summary: m.summary}
	m.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	c.pending.Store(m.pending.Load())
	return c
}

// transform is the informer transform: it projects each Node as it arrives
// and keeps only a mirroredNode.
func (s *Session) transform(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil // tombstones carry a mirroredNode already
	}
	st := projection.Project(node, s.cfg.Filter)
	m := &mirroredNode{
		ObjectMeta: metav1.ObjectMeta{Name: node.Name, ResourceVersion: node.ResourceVersion},
		digest:     projection.Digest(&st),
		summary:    summarize(node),
	}
	if !s.writer.holds(node.Name, m.digest) {
		m.pending.Store(&st)
	}
	return m, nil
}

var summedResources = [3]corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods}

func summarize(node *corev1.Node) nodeSummary {
	s := nodeSummary{ready: projection.ReadyStatus(node) == corev1.ConditionTrue, unschedulable: node.Spec.Unschedulable}
	for i, name := range summedResources {
		s.capacity[i] = amount(node.Status.Capacity, name)
		s.allocatable[i] = amount(node.Status.Allocatable, name)
	}
	return s
}

func amount(l corev1.ResourceList, name corev1.ResourceName) int64 {
	q, ok := l[name]
	if !ok {
		return 0
	}
	if name == corev1.ResourceCPU {
		return q.MilliValue()
	}
	return q.Value()
}

// resourceList turns summed amounts back into quantities.
func resourceList(sum [3]int64) corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    *resourceQuantity(sum[0], true),
		corev1.ResourceMemory: *resourceQuantity(sum[1], false),
		corev1.ResourcePods:   *resourceQuantity(sum[2], false),
	}
}

func resourceQuantity(v int64, milli bool) *resource.Quantity {
	if milli {
		return resource.NewMilliQuantity(v, resource.DecimalSI)
	}
	return resource.NewQuantity(v, resource.BinarySI)
}
