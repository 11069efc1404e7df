package nodeoperation

import (
	"context"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/shard"
)

// ShardKind is the shard keyspace of NodeOperations; its keys are
// "namespace/name".
//
// A NodeOperation runs on one replica, its owner, whatever clusters it
// targets: its status has one writer, as without sharding, and the
// targets of clusters other replicas own are reached with member access
// built from their Secrets (managedcluster.Reconciler.Member).
const ShardKind = "NodeOperation"

// shardKeyspace makes NodeOperations shard keys. Finished ones are keys
// only while something is left to do on them (a TTL to wait out, a
// finalizer to remove), so that the Leases do not list every operation
// ever run.
func (r *Reconciler) shardKeyspace() shard.Keyspace {
	return shard.Keyspace{
		Kind: ShardKind,
		List: func(ctx context.Context) ([]string, error) {
			var list fleetv1.NodeOperationList
			if err := r.Client.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
				return nil, err
			}
			keys := make([]string, 0, len(list.Items))
			for i := range list.Items {
				op := &list.Items[i]
				if finished(op.Status.Phase) && op.DeletionTimestamp.IsZero() && op.Spec.TTLSecondsAfterFinished == nil {
					continue
				}
				keys = append(keys, op.Namespace+"/"+op.Name)
			}
			return keys, nil
		},
		Release: func(key string) {
			nn := parseKey(key)
			if r.runs.stop(nn) {
				ctrl.Log.WithName("nodeoperation").Info("Another replica owns the operation now: stopped its run here; it resumes there", "NodeOperation", nn)
			}
		},
		Acquired: func(key string) {
			nn := parseKey(key)
			obj := &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: nn.Namespace, Name: nn.Name}}
			go func() {
				select {
				case r.acquired <- event.GenericEvent{Object: obj}:
				case <-r.base.Done():
				}
			}()
		},
	}
}

func (r *Reconciler) holdOperation(key types.NamespacedName) (owned bool, unlock func()) {
	if r.Shard == nil {
		return true, func() {}
	}
	return r.Shard.Hold(ShardKind, key.String())
}

func parseKey(key string) types.NamespacedName {
	ns, name, _ := strings.Cut(key, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}
