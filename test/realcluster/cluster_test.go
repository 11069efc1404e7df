package realcluster

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemirror/nodemirror/test/cluster"
)

// TestNodeRunsPods: the kubelet runs a pod in containerd on the CNI bridge
// and ends it when it is deleted.
func TestNodeRunsPods(t *testing.T) {
	ctx := context.Background()
	namespace(t, "smoke")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pause", Namespace: "smoke"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "pause", Image: cluster.PauseImage, ImagePullPolicy: corev1.PullNever,
		}}},
	}
	if _, err := real.Client.CoreV1().Pods("smoke").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the pod Ready with a pod IP", func(ctx context.Context) (bool, error) {
		p, err := real.Client.CoreV1().Pods("smoke").Get(ctx, "pause", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return podReady(p) && p.Status.PodIP != "" && p.Spec.NodeName != "", nil
	})
	if err := real.Client.CoreV1().Pods("smoke").Delete(ctx, "pause", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the kubelet to end the deleted pod", func(ctx context.Context) (bool, error) {
		_, err := real.Client.CoreV1().Pods("smoke").Get(ctx, "pause", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}
