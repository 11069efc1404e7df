package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/protocol"
)

// opLabel marks the nodes the operations scenario acts on.
const opLabel = "bench.nodemirror.io/op"

type operationsRun struct {
	Clusters int `json:"clusters"`
	Nodes    int `json:"nodes"`
	// DirectSeconds: the same cordons patched on the members from one
	// client, as many at a time as the operation runs, until the last row
	// is cordoned at a websocket client.
	DirectSeconds float64 `json:"directSeconds"`
	// OperationSeconds: one NodeOperation created on the hub, until the
	// last row is cordoned at a websocket client.
	OperationSeconds float64 `json:"operationSeconds"`
	// SucceededSeconds: until the operation's status says Succeeded.
	SucceededSeconds float64 `json:"succeededSeconds"`
	Succeeded        int32   `json:"succeeded"`
	Failed           int32   `json:"failed"`
}

// operations cordons half the nodes of two clusters with one NodeOperation,
// timed from its create until a websocket client of the sidecar has seen
// every row cordoned, against the same cordons patched straight on the
// members from one client in the same run.
func (e *env) operations(ctx context.Context, res *results) error {
	clusters := []string{clusterName(0, 0), clusterName(1, 0)}
	if err := e.hub.Create(ctx, e.cluster(clusters[1], 1, "0")); err != nil {
		return err
	}
	if err := e.waitSnapshots(ctx, "bench", clusters[1], e.sz.NodesPerCluster, 5*time.Minute); err != nil {
		return err
	}
	perCluster := e.sz.NodesPerCluster / 2
	targets := map[types.NamespacedName]bool{} // cluster/node → cordoned
	for m := range clusters {
		for i := range perCluster {
			targets[types.NamespacedName{Namespace: clusters[m], Name: nodeName(m, 0, i)}] = false
		}
	}
	e.log("  labelling %d nodes of %d clusters", len(targets), len(clusters))
	keys := make([]types.NamespacedName, 0, len(targets))
	for k := range targets {
		keys = append(keys, k)
	}
	memberOf := func(cluster string) int {
		if cluster == clusters[0] {
			return 0
		}
		return 1
	}
	patchAll := func(workers int, patch string) error {
		return parallel(ctx, len(keys), workers, func(ctx context.Context, i int) error {
			_, err := e.members[memberOf(keys[i].Namespace)].CoreV1().Nodes().Patch(ctx, keys[i].Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		})
	}
	if err := patchAll(16, fmt.Sprintf(`{"metadata":{"labels":{%q:"1"}}}`, opLabel)); err != nil {
		return err
	}
	if err := e.waitLabelled(ctx, len(targets)); err != nil {
		return err
	}

	watcher, err := e.watchCordons(ctx, clusters, targets)
	if err != nil {
		return err
	}
	defer watcher.close()
	// As many at a time as the operation: maxConcurrent (5) per cluster.
	workers := 5 * len(clusters)
	run := operationsRun{Clusters: len(clusters), Nodes: len(targets)}

	start := time.Now()
	if err := patchAll(workers, `{"spec":{"unschedulable":true}}`); err != nil {
		return err
	}
	if err := watcher.wait(true, 5*time.Minute); err != nil {
		return fmt.Errorf("direct cordons: %w", err)
	}
	run.DirectSeconds = secs(time.Since(start))
	e.log("  direct: %d cordons seen at the client in %.1fs", len(targets), run.DirectSeconds)

	if err := patchAll(16, `{"spec":{"unschedulable":false}}`); err != nil {
		return err
	}
	if err := watcher.wait(false, 5*time.Minute); err != nil {
		return fmt.Errorf("uncordons: %w", err)
	}

	op := &fleetv1.NodeOperation{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "cordon"},
		Spec: fleetv1.NodeOperationSpec{
			Clusters: fleetv1.ClusterTargets{Names: clusters},
			Nodes:    fleetv1.NodeTargets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{opLabel: "1"}}},
			Action:   fleetv1.ActionCordon,
		},
	}
	start = time.Now()
	if err := e.hub.Create(ctx, op); err != nil {
		return err
	}
	if err := watcher.wait(true, 5*time.Minute); err != nil {
		return fmt.Errorf("operation: %w", err)
	}
	run.OperationSeconds = secs(time.Since(start))
	for {
		if err := e.hub.Get(ctx, client.ObjectKeyFromObject(op), op); err != nil {
			return err
		}
		if op.Status.Phase == fleetv1.OperationSucceeded || op.Status.Phase == fleetv1.OperationFailed ||
			apimeta.IsStatusConditionTrue(op.Status.Conditions, fleetv1.ConditionStalled) {
			break
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("operation still %q after 5 minutes", op.Status.Phase)
		}
		time.Sleep(50 * time.Millisecond)
	}
	run.SucceededSeconds = secs(time.Since(start))
	run.Succeeded, run.Failed = op.Status.Counts.Succeeded, op.Status.Counts.Failed
	e.log("  operation: %d cordons seen at the client in %.1fs, %s after %.1fs (%d succeeded, %d failed)",
		len(targets), run.OperationSeconds, op.Status.Phase, run.SucceededSeconds, run.Succeeded, run.Failed)
	res.Operations = &run
	return nil
}

// waitLabelled waits until the hub holds want snapshots with opLabel.
func (e *env) waitLabelled(ctx context.Context, want int) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(fleetv1.GroupVersion.WithKind("NodeSnapshotList"))
		if err := e.hub.List(ctx, &list, client.InNamespace("bench"), client.MatchingLabels{opLabel: "1"}); err != nil {
			return err
		}
		if len(list.Items) == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d snapshots labelled", len(list.Items), want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cordonWatcher follows the target rows at a websocket client of the
// sidecar, as the UI does.
type cordonWatcher struct {
	ws      *websocket.Conn
	cancel  context.CancelFunc
	mu      sync.Mutex
	rows    map[types.NamespacedName]bool
	changed chan struct{}
}

func (e *env) watchCordons(ctx context.Context, clusters []string, targets map[types.NamespacedName]bool) (*cordonWatcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	sub, _ := json.Marshal(map[string]any{"type": "subscribe", "id": "ops", "namespace": "bench", "clusters": clusters})
	ws, err := e.dialSidecar(ctx, string(sub))
	if err != nil {
		cancel()
		return nil, err
	}
	w := &cordonWatcher{ws: ws, cancel: cancel, rows: targets, changed: make(chan struct{}, 1)}
	go func() {
		for {
			_, data, err := ws.Read(ctx)
			if err != nil {
				return
			}
			var env protocol.Envelope
			if json.Unmarshal(data, &env) != nil || len(env.Event.Object) == 0 {
				continue
			}
			var snap struct {
				Spec   fleetv1.NodeSnapshotSpec `json:"spec"`
				Status struct {
					Unschedulable bool `json:"unschedulable"`
				} `json:"status"`
			}
			if json.Unmarshal(env.Event.Object, &snap) != nil {
				continue
			}
			key := types.NamespacedName{Namespace: snap.Spec.ClusterName, Name: snap.Spec.NodeName}
			w.mu.Lock()
			if _, ok := w.rows[key]; ok {
				w.rows[key] = snap.Status.Unschedulable
			}
			w.mu.Unlock()
			select {
			case w.changed <- struct{}{}:
			default:
			}
		}
	}()
	return w, nil
}

// wait returns once every target row reads cordoned (or not).
func (w *cordonWatcher) wait(cordoned bool, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		left := 0
		for _, v := range w.rows {
			if v != cordoned {
				left++
			}
		}
		w.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-w.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return fmt.Errorf("%d of %d rows not yet %s at the client", left, len(w.rows), map[bool]string{true: "cordoned", false: "uncordoned"}[cordoned])
		}
	}
}

func (w *cordonWatcher) close() {
	w.cancel()
	w.ws.CloseNow()
}
