package simulator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Options shape one simulated member cluster.
type Options struct {
	// Nodes to register at start; the count then drifts between half and
	// one and a half times this as nodes come and go.
	Nodes int
	// Prefix of node names, e.g. "east-".
	Prefix string
	// HeartbeatInterval is how often each node heartbeats (default 10s).
	HeartbeatInterval time.Duration
	// ChangeInterval is the mean time between meaningful changes (default 2s).
	ChangeInterval time.Duration
	// PodInterval is how often the terminating pods of the simulated
	// nodes are looked at, to end those whose grace period is over
	// (default 1s).
	PodInterval time.Duration
	// Seed makes a run repeatable.
	Seed uint64
	Log  logr.Logger
}

// Simulator drives one member cluster's nodes.
type Simulator struct {
	cs    kubernetes.Interface
	opts  Options
	rnd   *rand.Rand
	nodes []string
	next  int // next node number
	// notReady holds nodes made NotReady, and when they recover.
	notReady map[string]time.Time
}

// New returns a simulator for the member cs talks to.
func New(cs kubernetes.Interface, opts Options) *Simulator {
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 10 * time.Second
	}
	if opts.ChangeInterval <= 0 {
		opts.ChangeInterval = 2 * time.Second
	}
	if opts.PodInterval <= 0 {
		opts.PodInterval = time.Second
	}
	return &Simulator{cs: cs, opts: opts, rnd: rand.New(rand.NewPCG(opts.Seed, 42)), notReady: map[string]time.Time{}}
}

var (
	zones         = []string{"a", "b", "c"}
	instanceTypes = []struct {
		name     string
		cpu, mem string
		allocCPU string
		allocMem string
	}{
		{"m6i.xlarge", "4", "16Gi", "3920m", "14Gi"},
		{"m6i.2xlarge", "8", "32Gi", "7910m", "29Gi"},
		{"r6i.4xlarge", "16", "128Gi", "15890m", "120Gi"},
	}
)

// Register creates the initial nodes.
func (s *Simulator) Register(ctx context.Context) error {
	for range s.opts.Nodes {
		if err := s.addNode(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Run heartbeats and changes nodes, and ends their terminating pods, until
// ctx ends.
func (s *Simulator) Run(ctx context.Context) error {
	beat := time.NewTicker(max(s.opts.HeartbeatInterval/time.Duration(max(len(s.nodes), 1)), 10*time.Millisecond))
	defer beat.Stop()
	change := time.NewTimer(s.jitter())
	defer change.Stop()
	pods := time.NewTicker(s.opts.PodInterval)
	defer pods.Stop()
	i := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			if len(s.nodes) == 0 {
				continue
			}
			i = (i + 1) % len(s.nodes)
			s.report(Heartbeat(ctx, s.cs, s.nodes[i]), "heartbeat")
		case <-change.C:
			s.report(s.change(ctx), "change")
			change.Reset(s.jitter())
		case <-pods.C:
			s.report(s.endTerminatingPods(ctx), "pod deletion")
		}
	}
}

// maxPodsEnded bounds the pods one pass of endTerminatingPods deletes.
const maxPodsEnded = 100

// endTerminatingPods plays the kubelets' part in a pod's deletion: a pod
// on a simulated node that has a deletionTimestamp now past (its grace
// period is over) is deleted for good, with grace period 0 and its UID as
// precondition, as a kubelet does once the pod's containers have stopped.
// Without it an evicted pod would stay Terminating for ever, and a drain
// would wait for it until its timeout. A node made NotReady has no kubelet
// to do so, as on a real cluster: its pods stay Terminating. At most
// maxPodsEnded pods per pass; the rest are ended on the next.
func (s *Simulator) endTerminatingPods(ctx context.Context) error {
	ours := map[string]bool{}
	for _, n := range s.nodes {
		if _, down := s.notReady[n]; !down {
			ours[n] = true
		}
	}
	if len(ours) == 0 {
		return nil
	}
	ended := 0
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := s.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil || !ours[p.Spec.NodeName] || now.Before(p.DeletionTimestamp.Time) {
				continue
			}
			uid := p.UID
			err := s.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &uid}})
			switch {
			case err == nil:
				s.opts.Log.V(1).Info("Terminating pod ended", "pod", p.Namespace+"/"+p.Name, "node", p.Spec.NodeName)
			case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err):
				return err
			}
			if ended++; ended == maxPodsEnded {
				return nil
			}
		}
		if list.Continue == "" {
			return nil
		}
		opts.Continue = list.Continue
	}
}

func (s *Simulator) report(err error, what string) {
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		s.opts.Log.Error(err, "Simulated "+what+" failed")
	}
}

func (s *Simulator) jitter() time.Duration {
	return time.Duration(float64(s.opts.ChangeInterval) * (0.5 + s.rnd.Float64()))
}

// change makes one meaningful change to a random node.
func (s *Simulator) change(ctx context.Context) error {
	now := time.Now()
	for name, until := range s.notReady {
		if now.After(until) {
			delete(s.notReady, name)
			return SetReady(ctx, s.cs, name, corev1.ConditionTrue)
		}
	}
	if len(s.nodes) == 0 {
		return s.addNode(ctx)
	}
	node := s.nodes[s.rnd.IntN(len(s.nodes))]
	switch p := s.rnd.IntN(100); {
	case p < 30:
		n, err := s.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.opts.Log.V(1).Info("Cordon toggled", "node", node, "unschedulable", !n.Spec.Unschedulable)
		_, err = s.cs.CoreV1().Nodes().Patch(ctx, node, "application/merge-patch+json",
			fmt.Appendf(nil, `{"spec":{"unschedulable":%t}}`, !n.Spec.Unschedulable), metav1.PatchOptions{})
		return err
	case p < 50:
		tier := []string{"gold", "silver", "bronze"}[s.rnd.IntN(3)]
		return PatchLabel(ctx, s.cs, node, "example.com/tier", ptr.To(tier))
	case p < 65:
		return s.toggleTaint(ctx, node)
	case p < 80:
		s.notReady[node] = now.Add(time.Duration(2+s.rnd.IntN(6)) * s.opts.ChangeInterval)
		return SetReady(ctx, s.cs, node, corev1.ConditionFalse)
	case p < 90 && len(s.nodes) < s.opts.Nodes*3/2+1:
		return s.addNode(ctx)
	case len(s.nodes) > s.opts.Nodes/2:
		return s.removeNode(ctx, node)
	default:
		return s.addNode(ctx)
	}
}

func (s *Simulator) toggleTaint(ctx context.Context, name string) error {
	n, err := s.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var taints []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Key != "dedicated" {
			taints = append(taints, t)
		}
	}
	if len(taints) == len(n.Spec.Taints) {
		taints = append(taints, corev1.Taint{Key: "dedicated", Value: "batch", Effect: corev1.TaintEffectNoSchedule})
	}
	n.Spec.Taints = taints
	_, err = s.cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

func (s *Simulator) addNode(ctx context.Context) error {
	name := fmt.Sprintf("%snode-%03d", s.opts.Prefix, s.next)
	role := "worker"
	if s.next < 3 {
		role = "control-plane"
	}
	s.next++
	it := instanceTypes[s.rnd.IntN(len(instanceTypes))]
	n := NewNode(name, map[string]string{
		"node-role.kubernetes.io/" + role:  "",
		"topology.kubernetes.io/zone":      s.opts.Prefix + zones[s.next%len(zones)],
		"node.kubernetes.io/instance-type": it.name,
		"kubernetes.io/arch":               "amd64",
	})
	n.Status.Capacity[corev1.ResourceCPU] = resource.MustParse(it.cpu)
	n.Status.Capacity[corev1.ResourceMemory] = resource.MustParse(it.mem)
	n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(it.allocCPU)
	n.Status.Allocatable[corev1.ResourceMemory] = resource.MustParse(it.allocMem)
	n.Status.Addresses[0].Address = fmt.Sprintf("10.%d.%d.%d", len(s.opts.Prefix)%200, s.next/250, s.next%250+1)
	if role == "control-plane" {
		n.Spec.Taints = []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}
	}
	if _, err := CreateNode(ctx, s.cs, n); err != nil {
		return err
	}
	s.nodes = append(s.nodes, name)
	s.opts.Log.V(1).Info("Node added", "node", name)
	return nil
}

func (s *Simulator) removeNode(ctx context.Context, name string) error {
	if err := s.cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		return err
	}
	for i, n := range s.nodes {
		if n == name {
			s.nodes = append(s.nodes[:i], s.nodes[i+1:]...)
			break
		}
	}
	delete(s.notReady, name)
	s.opts.Log.V(1).Info("Node removed", "node", name)
	return nil
}
