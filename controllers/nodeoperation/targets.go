package nodeoperation

import (
	"context"
	"fmt"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// AnyNode is the node of the one result given for a cluster that does not
// exist when nodes are chosen by selector: there are no nodes to name.
const AnyNode = "*"

// clusterTarget is one chosen cluster and its chosen nodes.
type clusterTarget struct {
	name string
	// missing: no ManagedCluster of that name in the namespace.
	missing bool
	// nodes are the mirrored nodes chosen, sorted.
	nodes []string
	// notMirrored are nodes chosen by name that have no NodeSnapshot.
	notMirrored []string
}

// resolve expands an operation's clusters and nodes. ManagedClusters are
// read from the cache, NodeSnapshots' metadata straight from the hub (the
// operator's cache keeps only their cluster label). Everything is read in
// the operation's own namespace.
func (r *Reconciler) resolve(ctx context.Context, op *fleetv1.NodeOperation) ([]clusterTarget, error) {
	ns := op.Namespace
	var names []string
	var out []clusterTarget
	if sel := op.Spec.Clusters.Selector; sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return nil, fmt.Errorf("spec.clusters.selector: %w", err)
		}
		var list fleetv1.ManagedClusterList
		if err := r.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: s}); err != nil {
			return nil, err
		}
		for i := range list.Items {
			names = append(names, list.Items[i].Name)
		}
	} else {
		for _, name := range op.Spec.Clusters.Names {
			err := r.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &fleetv1.ManagedCluster{})
			switch {
			case apierrors.IsNotFound(err):
				t := clusterTarget{name: name, missing: true}
				if op.Spec.Nodes.Names != nil {
					t.notMirrored = slices.Sorted(slices.Values(op.Spec.Nodes.Names))
				}
				out = append(out, t)
				continue
			case err != nil:
				return nil, err
			}
			names = append(names, name)
		}
	}
	var nodeSel labels.Selector = labels.Everything()
	if sel := op.Spec.Nodes.Selector; sel != nil {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return nil, fmt.Errorf("spec.nodes.selector: %w", err)
		}
		nodeSel = s
	}
	for _, name := range names {
		req, err := labels.NewRequirement(fleetv1.ClusterLabel, selection.Equals, []string{name})
		if err != nil {
			return nil, err
		}
		mirrored, err := r.mirroredNodes(ctx, ns, nodeSel.Add(*req))
		if err != nil {
			return nil, err
		}
		t := clusterTarget{name: name}
		if op.Spec.Nodes.Names == nil {
			t.nodes = slices.Sorted(slices.Values(mirrored))
		} else {
			have := make(map[string]bool, len(mirrored))
			for _, n := range mirrored {
				have[n] = true
			}
			for _, n := range op.Spec.Nodes.Names {
				if have[n] {
					t.nodes = append(t.nodes, n)
				} else {
					t.notMirrored = append(t.notMirrored, n)
				}
			}
			slices.Sort(t.nodes)
			slices.Sort(t.notMirrored)
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b clusterTarget) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
	return out, nil
}

// mirroredNodes lists the node names of the snapshots sel selects in ns,
// page by page, reading metadata only (the node's name is in an annotation).
func (r *Reconciler) mirroredNodes(ctx context.Context, ns string, sel labels.Selector) ([]string, error) {
	var nodes []string
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
	opts := []client.ListOption{client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}, client.Limit(1000)}
	for {
		if err := r.APIReader.List(ctx, list, opts...); err != nil {
			return nil, err
		}
		for i := range list.Items {
			if n := list.Items[i].Annotations[fleetv1.NodeNameAnnotation]; n != "" {
				nodes = append(nodes, n)
			}
		}
		if list.Continue == "" {
			return nodes, nil
		}
		opts = append(opts[:3:3], client.Continue(list.Continue))
	}
}

// describe is the short form of targets for status.targets.
func describe(targets []clusterTarget) string {
	nodes := 0
	for _, t := range targets {
		nodes += len(t.nodes) + len(t.notMirrored)
	}
	c := "clusters"
	if len(targets) == 1 {
		c = "cluster"
	}
	n := "nodes"
	if nodes == 1 {
		n = "node"
	}
	return fmt.Sprintf("%d %s, %d %s", len(targets), c, nodes, n)
}
