package managedcluster

import (
	"context"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// ShardKind is the shard keyspace of ManagedClusters; its keys are
// "namespace/name".
const ShardKind = "ManagedCluster"

// shardKeyspace makes ManagedClusters shard keys: every ManagedCluster in
// the cache is one, and releasing one stops its session, the only thing of
// a cluster that writes outside a reconcile.
func (r *Reconciler) shardKeyspace() shard.Keyspace {
	return shard.Keyspace{
		Kind: ShardKind,
		List: func(ctx context.Context) ([]string, error) {
			var typed fleetv1.ManagedClusterList
			// Names only, read in place: no copy of every cluster per round.
			if err := r.Client.List(ctx, &typed, client.UnsafeDisableDeepCopy); err != nil {
				return nil, err
			}
			keys := make([]string, len(typed.Items))
			for i := range typed.Items {
				keys[i] = typed.Items[i].Namespace + "/" + typed.Items[i].Name
			}
			return keys, nil
		},
		Release: func(key string) {
			nn := parseKey(key)
			if r.sessions.stop(nn) {
				r.log().Info("Another replica owns the cluster now: stopped its session", "ManagedCluster", nn)
			}
			forgetClusterMetrics(nn)
		},
		Acquired: func(key string) {
			nn := parseKey(key)
			obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: nn.Namespace, Name: nn.Name}}
			// Not from the membership's goroutine: the controller may not
			// be taking events yet, and the Lease must be renewed meanwhile.
			go func() {
				select {
				case r.changes <- event.GenericEvent{Object: obj}:
				case <-r.base.Done():
				}
			}()
		},
	}
}

// holdCluster says whether this replica owns the cluster; unlock ends the
// hold. Without sharding every cluster is this replica's.
func (r *Reconciler) holdCluster(key types.NamespacedName) (owned bool, unlock func()) {
	if r.Shard == nil {
		return true, func() {}
	}
	return r.Shard.Hold(ShardKind, key.String())
}

// ownsCluster is holdCluster without the hold.
func (r *Reconciler) ownsCluster(key types.NamespacedName) bool {
	return r.Shard == nil || r.Shard.Owns(ShardKind, key.String())
}

func parseKey(key string) types.NamespacedName {
	ns, name, _ := strings.Cut(key, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}
