package framework

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Kubelet stands in for the kubelets of a member that has none (envtest,
// where an evicted pod bound to a node stays Terminating for ever): it
// ends the pods of Nodes that have a deletionTimestamp, Delay after it
// first saw them terminating, by deleting them with grace period 0 and
// their UID as precondition, as a kubelet does once their containers have
// stopped.
type Kubelet struct {
	Client kubernetes.Interface
	Nodes  []string
	Delay  time.Duration
	// Then, if set, is called with each pod ended, right after: e.g. to
	// put a pod of the same name on another node, as a StatefulSet's
	// controller and the scheduler would.
	Then func(ctx context.Context, pod corev1.Pod)

	mu    sync.Mutex
	seen  map[types.UID]time.Time
	ended []EndedPod
}

// EndedPod is a pod the Kubelet ended. At is when it sent the deletion:
// the pod was still there then, and gone a moment later.
type EndedPod struct {
	Namespace, Name string
	UID             types.UID
	At              time.Time
}

// Start runs the Kubelet, polling every 100 ms, until t ends.
func (k *Kubelet) Start(t testing.TB) *Kubelet {
	t.Helper()
	k.seen = map[types.UID]time.Time{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, node := range k.Nodes {
				k.pass(ctx, node)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return k
}

func (k *Kubelet) pass(ctx context.Context, node string) {
	list, err := k.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return
	}
	now := time.Now()
	for _, pod := range list.Items {
		if pod.DeletionTimestamp == nil {
			continue
		}
		k.mu.Lock()
		first, ok := k.seen[pod.UID]
		if !ok {
			first = now
			k.seen[pod.UID] = now
		}
		k.mu.Unlock()
		if now.Sub(first) < k.Delay {
			continue
		}
		uid := pod.UID
		at := time.Now()
		err := k.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0)), Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil {
			continue
		}
		k.mu.Lock()
		k.ended = append(k.ended, EndedPod{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, At: at})
		k.mu.Unlock()
		if k.Then != nil {
			k.Then(ctx, pod)
		}
	}
}

// Ended returns the pods ended so far, in order.
func (k *Kubelet) Ended() []EndedPod {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]EndedPod(nil), k.ended...)
}
