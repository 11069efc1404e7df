package join

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// hubSecret is the kubeconfig Secret as the operator wants it: Opaque,
// labelled, the kubeconfig under the key the ManagedCluster names.
func hubSecret(namespace, name string, kubeconfig []byte) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1",
		"kind":       "Secret",
		"metadata": map[string]any{
			"name":      name,
			"namespace": namespace,
			"labels":    map[string]any{fleetv1.KubeconfigSecretLabel: "true"},
		},
		"type": "Opaque",
		"data": map[string]any{fleetv1.DefaultKubeconfigKey: base64.StdEncoding.EncodeToString(kubeconfig)},
	}}
}

// hubManagedCluster holds only the Secret reference: the CLI owns that
// field and nothing else, so a nodeSelector or mirror set by anyone else
// stays as it is when join runs again.
func hubManagedCluster(namespace, name, secret string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": fleetv1.GroupVersion.String(),
		"kind":       "ManagedCluster",
		"metadata":   map[string]any{"name": name, "namespace": namespace},
		"spec": map[string]any{
			"kubeconfigSecretRef": map[string]any{"name": secret, "key": fleetv1.DefaultKubeconfigKey},
		},
	}}
}

// unjoinHub deletes the ManagedCluster, waits at most wait for its
// finalizer, and deletes its Secret. A finalizer still there after wait
// is reported in finalizerErr, and the Secret is deleted all the same: the
// operator does not need it to let the ManagedCluster go.
func unjoinHub(ctx context.Context, hub *cluster, namespace, name, secretName string, wait time.Duration, report func(string, ...any)) (finalizerErr, err error) {
	mc := &fleetv1.ManagedCluster{}
	mcName := "ManagedCluster " + objName(namespace, name)
	err = hub.call(ctx, "reading "+mcName, func(ctx context.Context) error {
		return hub.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, mc)
	})
	switch {
	case apierrors.IsNotFound(err):
		report("hub %q: %s not found", hub.context, mcName)
	case err != nil:
		return nil, err
	default:
		if secretName == "" {
			secretName = mc.Spec.KubeconfigSecretRef.Name
		}
		err = hub.call(ctx, "deleting "+mcName, func(ctx context.Context) error {
			return client.IgnoreNotFound(hub.client.Delete(ctx, mc))
		})
		if err != nil {
			return nil, err
		}
		u := hubManagedCluster(namespace, name, "")
		if err := waitGone(ctx, hub, u, wait); err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			finalizerErr = fmt.Errorf("hub context %q: %s is still terminating after %s: its finalizer %s is removed by the nodemirror operator once the cluster's NodeSnapshots are deleted; is the operator running on the hub? It will let go as soon as it runs (%v)",
				hub.context, mcName, wait, fleetv1.ManagedClusterFinalizer, err)
			report("%v", finalizerErr)
		} else if slices.Contains(mc.Finalizers, fleetv1.ManagedClusterFinalizer) {
			report("hub %q: deleted %s; the operator removed its NodeSnapshots", hub.context, mcName)
		} else {
			report("hub %q: deleted %s", hub.context, mcName)
		}
	}
	if secretName == "" {
		secretName = name + "-kubeconfig"
	}
	return finalizerErr, deleteHubSecret(ctx, hub, namespace, name, secretName, report)
}

// deleteHubSecret deletes the kubeconfig Secret unless it is not one
// (unlabelled) or another ManagedCluster of the namespace still uses it.
func deleteHubSecret(ctx context.Context, hub *cluster, namespace, cluster, name string, report func(string, ...any)) error {
	secretName := "Secret " + objName(namespace, name)
	s := &unstructured.Unstructured{}
	s.SetAPIVersion("v1")
	s.SetKind("Secret")
	err := hub.call(ctx, "reading "+secretName, func(ctx context.Context) error {
		return hub.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, s)
	})
	if apierrors.IsNotFound(err) {
		report("hub %q: %s not found", hub.context, secretName)
		return nil
	}
	if err != nil {
		return err
	}
	if s.GetLabels()[fleetv1.KubeconfigSecretLabel] != "true" {
		report("hub %q: left %s in place: it is not labelled %s=true, so it is no member kubeconfig of nodemirror's", hub.context, secretName, fleetv1.KubeconfigSecretLabel)
		return nil
	}
	var list fleetv1.ManagedClusterList
	err = hub.call(ctx, "listing the ManagedClusters of namespace "+namespace, func(ctx context.Context) error {
		return hub.client.List(ctx, &list, client.InNamespace(namespace))
	})
	if err != nil {
		return err
	}
	for _, other := range list.Items {
		if other.Name != cluster && other.Spec.KubeconfigSecretRef.Name == name {
			report("hub %q: left %s in place: ManagedCluster %s uses it too", hub.context, secretName, objName(namespace, other.Name))
			return nil
		}
	}
	err = hub.call(ctx, "deleting "+secretName, func(ctx context.Context) error {
		return client.IgnoreNotFound(hub.client.Delete(ctx, s))
	})
	if err != nil {
		return err
	}
	report("hub %q: deleted %s", hub.context, secretName)
	return nil
}
