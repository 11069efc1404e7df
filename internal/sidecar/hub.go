package sidecar

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/fanout"
	"github.com/nodemirror/nodemirror/internal/protocol"
)

// kindInfo ties a protocol kind to its hub resource and broker.
type kindInfo struct {
	kind     string
	resource string
	broker   *fanout.Broker
}

func newKinds(historySize int) map[string]*kindInfo {
	apiVersion := fleetv1.GroupVersion.String()
	return map[string]*kindInfo{
		protocol.KindNodeSnapshot: {
			kind: protocol.KindNodeSnapshot, resource: "nodesnapshots",
			broker: fanout.NewBroker(apiVersion, protocol.KindNodeSnapshot, fanout.ByLabel(fleetv1.ClusterLabel), historySize),
		},
		protocol.KindManagedCluster: {
			kind: protocol.KindManagedCluster, resource: "managedclusters",
			broker: fanout.NewBroker(apiVersion, protocol.KindManagedCluster, fanout.ByName, historySize),
		},
		// An operation may act on many clusters: its subscriptions take no
		// cluster filter (the decoder refuses one), so none is indexed.
		protocol.KindNodeOperation: {
			kind: protocol.KindNodeOperation, resource: "nodeoperations",
			broker: fanout.NewBroker(apiVersion, protocol.KindNodeOperation, noCluster, historySize),
		},
	}
}

func noCluster(*unstructured.Unstructured) string { return "" }

// runReflector lists and watches one resource on the hub, across all
// namespaces, into its broker, until ctx ends. This is the one hub watch
// per kind, whatever the number of clients.
func runReflector(ctx context.Context, dyn dynamic.Interface, k *kindInfo) {
	res := dyn.Resource(schema.GroupVersionResource{Group: fleetv1.GroupVersion.Group, Version: fleetv1.GroupVersion.Version, Resource: k.resource})
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return res.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return res.Watch(ctx, o)
		},
	}
	r := cache.NewReflectorWithOptions(lw, &unstructured.Unstructured{}, k.broker, cache.ReflectorOptions{Name: "sidecar-" + k.resource})
	r.RunWithContext(ctx)
}
