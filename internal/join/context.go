package join

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// FieldManager owns, on both sides, the fields the CLI applies.
const FieldManager = "nodemirror-cli"

// cluster is one side (hub or member) reached through a kubeconfig context
// of the person running the CLI.
type cluster struct {
	role    string // "hub" or "member"
	context string
	timeout time.Duration
	config  *rest.Config
	raw     *clientcmdapi.Cluster // the context's cluster entry, paths resolved
	client  client.Client
	cs      kubernetes.Interface
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := fleetv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// open loads context ctxName of the kubeconfig at path (or of the usual
// places: $KUBECONFIG, ~/.kube/config, when path is empty).
func open(role, path, ctxName string, timeout time.Duration) (*cluster, error) {
	if ctxName == "" {
		return nil, fmt.Errorf("--%s-context is required: name the kubeconfig context of the %s cluster", role, role)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: ctxName})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("%s context %q: loading kubeconfig: %w", role, ctxName, err)
	}
	kctx, ok := raw.Contexts[ctxName]
	if !ok {
		return nil, fmt.Errorf("%s context %q is not in the kubeconfig%s", role, ctxName, where(path))
	}
	rawCluster, ok := raw.Clusters[kctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("%s context %q names cluster %q, which is not in the kubeconfig%s", role, ctxName, kctx.Cluster, where(path))
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%s context %q: %w", role, ctxName, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Timeout = timeout
	cfg.UserAgent = FieldManager
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s context %q: %w", role, ctxName, err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return nil, fmt.Errorf("%s context %q: %w", role, ctxName, err)
	}
	return &cluster{role: role, context: ctxName, timeout: timeout, config: cfg, raw: rawCluster, client: c, cs: cs}, nil
}

func where(path string) string {
	if path == "" {
		return " ($KUBECONFIG or ~/.kube/config)"
	}
	return " " + path
}

// call runs one API call under the request timeout and names the context
// and what the call was about in its error.
func (c *cluster) call(ctx context.Context, what string, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := f(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s context %q: %s: no answer within %s (--request-timeout): %w", c.role, c.context, what, c.timeout, err)
		}
		if meta.IsNoMatchError(err) && c.role == "hub" {
			return fmt.Errorf("%s context %q: %s: %w (are the nodemirror CRDs installed on the hub?)", c.role, c.context, what, err)
		}
		return fmt.Errorf("%s context %q: %s: %w", c.role, c.context, what, err)
	}
	return nil
}

// apply server-side applies obj as FieldManager, taking over fields other
// managers hold: join's objects are its own.
func (c *cluster) apply(ctx context.Context, obj *unstructured.Unstructured) error {
	return c.call(ctx, "applying "+describe(obj), func(ctx context.Context) error {
		return c.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldManager), client.ForceOwnership)
	})
}

// describe names an object as errors and reports do: "Secret fleet/edge-kubeconfig".
func describe(obj *unstructured.Unstructured) string {
	return obj.GetKind() + " " + objName(obj.GetNamespace(), obj.GetName())
}

func objName(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}
