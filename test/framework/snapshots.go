package framework

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/projection"
)

// NewSnapshot returns a NodeSnapshot as the operator writes it, for tests
// of readers (the sidecar, the UI) that need no member cluster.
func NewSnapshot(namespace, cluster, node string) *fleetv1.NodeSnapshot {
	n := NewNode(node, map[string]string{"node-role.kubernetes.io/worker": ""})
	n.CreationTimestamp = metav1.Now()
	st := projection.Project(n, projection.NewFilter(fleetv1.MirrorSpec{}))
	return &fleetv1.NodeSnapshot{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace, Name: projection.SnapshotName(cluster, node),
			Labels:      map[string]string{fleetv1.ClusterLabel: cluster},
			Annotations: map[string]string{fleetv1.DigestAnnotation: projection.Digest(&st)},
		},
		Spec:   fleetv1.NodeSnapshotSpec{ClusterName: cluster, NodeName: node},
		Status: st,
	}
}

// CreateSnapshots creates count snapshots node-0..node-<count-1> of a
// cluster, eight at a time.
func CreateSnapshots(ctx context.Context, c client.Client, namespace, cluster string, count int) error {
	var g errgroup.Group
	g.SetLimit(8)
	for i := range count {
		g.Go(func() error { return c.Create(ctx, NewSnapshot(namespace, cluster, fmt.Sprintf("node-%d", i))) })
	}
	return g.Wait()
}

// NewManagedCluster returns a ready-looking ManagedCluster for readers' tests.
func NewManagedCluster(namespace, name string) *fleetv1.ManagedCluster {
	return &fleetv1.ManagedCluster{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       fleetv1.ManagedClusterSpec{KubeconfigSecretRef: fleetv1.SecretKeyRef{Name: name + "-kubeconfig"}},
	}
}
