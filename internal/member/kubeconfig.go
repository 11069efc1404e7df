package member

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// Refusal says why the member access given cannot be used. Retrying does
// not help: the Secret (or the spec) has to change. Reason is one of the
// condition reasons of api/v1alpha1.
type Refusal struct {
	Reason  string
	Message string
}

func (e *Refusal) Error() string { return e.Reason + ": " + e.Message }

// Policy says which kubeconfig features the operator accepts, and bounds
// what a member reached through one may make the operator do.
type Policy struct {
	// AllowExecAndFiles accepts exec and auth-provider plugins and paths to
	// local files. Off by default: they run programs or read files of the
	// operator's own pod on behalf of whoever can write a Secret.
	AllowExecAndFiles bool
	// AllowProxy accepts a cluster's proxy-url. Off by default: the proxy,
	// not the member, would be dialed, past the Network checks.
	AllowProxy bool
	// Network decides which addresses may be dialed.
	Network Network
	// Limits bound response sizes and waits.
	Limits Limits
}

// RESTConfig parses a kubeconfig and returns the rest.Config of its current
// context, refusing what the policy does not allow. Every error is a
// *Refusal.
func (p Policy) RESTConfig(kubeconfig []byte) (*rest.Config, error) {
	cfg, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, &Refusal{fleetv1.ReasonKubeconfigInvalid, fmt.Sprintf("cannot parse kubeconfig: %v", err)}
	}
	ctxName := cfg.CurrentContext
	if ctxName == "" && len(cfg.Contexts) == 1 {
		for name := range cfg.Contexts {
			ctxName = name
		}
	}
	kctx, ok := cfg.Contexts[ctxName]
	if !ok {
		return nil, &Refusal{fleetv1.ReasonKubeconfigInvalid, fmt.Sprintf("kubeconfig has no current context (current-context %q)", cfg.CurrentContext)}
	}
	if !p.AllowExecAndFiles {
		if err := refuseExecAndFiles(cfg, kctx); err != nil {
			return nil, err
		}
	}
	if cluster, ok := cfg.Clusters[kctx.Cluster]; ok && cluster.ProxyURL != "" && !p.AllowProxy {
		return nil, &Refusal{fleetv1.ReasonProxyRefused, fmt.Sprintf("cluster %q sets proxy-url; the operator dials members itself unless started with --allow-kubeconfig-proxy", kctx.Cluster)}
	}
	restCfg, err := clientcmd.NewNonInteractiveClientConfig(*cfg, ctxName, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		return nil, &Refusal{fleetv1.ReasonKubeconfigInvalid, fmt.Sprintf("kubeconfig context %q is not usable: %v", ctxName, err)}
	}
	p.guard(restCfg)
	// Fail on unparsable certificate data now, with a reason of its own,
	// rather than on every request later.
	if _, err := rest.TransportFor(restCfg); err != nil {
		return nil, &Refusal{fleetv1.ReasonCertificateDataInvalid, fmt.Sprintf("kubeconfig context %q: %v", ctxName, err)}
	}
	return restCfg, nil
}

// guard makes every client built from cfg dial only what the Network
// allows, never follow redirects, read bounded responses, wait bounded
// times, and keep the member's warning texts out of the operator's log.
func (p Policy) guard(cfg *rest.Config) {
	limits := p.Limits
	limits.defaults()
	cfg.Dial = p.Network.DialContext
	if cfg.Proxy == nil {
		// Not the operator's own proxy environment either: a proxy
		// would be dialed instead of the checked member address.
		cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &boundedTransport{next: rt, limits: limits} }
	cfg.WarningHandlerWithContext = rest.NoWarnings{}
}

func refuseExecAndFiles(cfg *clientcmdapi.Config, kctx *clientcmdapi.Context) error {
	if user, ok := cfg.AuthInfos[kctx.AuthInfo]; ok {
		switch {
		case user.Exec != nil:
			return &Refusal{fleetv1.ReasonExecPluginRefused, fmt.Sprintf("user %q runs exec plugin %q; the operator refuses exec plugins unless started with --allow-kubeconfig-exec-and-files", kctx.AuthInfo, user.Exec.Command)}
		case user.AuthProvider != nil:
			return &Refusal{fleetv1.ReasonExecPluginRefused, fmt.Sprintf("user %q uses auth provider %q; the operator refuses auth provider plugins unless started with --allow-kubeconfig-exec-and-files", kctx.AuthInfo, user.AuthProvider.Name)}
		}
		if err := refuseFiles("user "+kctx.AuthInfo, []fileField{
			{"client-certificate", user.ClientCertificate},
			{"client-key", user.ClientKey},
			{"tokenFile", user.TokenFile},
		}); err != nil {
			return err
		}
	}
	if cluster, ok := cfg.Clusters[kctx.Cluster]; ok {
		if err := refuseFiles("cluster "+kctx.Cluster, []fileField{
			{"certificate-authority", cluster.CertificateAuthority},
		}); err != nil {
			return err
		}
	}
	return nil
}

type fileField struct{ name, path string }

func refuseFiles(owner string, fields []fileField) error {
	var errs []error
	for _, f := range fields {
		if f.path != "" {
			errs = append(errs, fmt.Errorf("%s reads %s from local file %q", owner, f.name, f.path))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &Refusal{fleetv1.ReasonLocalFileRefused, err.Error() + "; embed the data (e.g. client-certificate-data) or start the operator with --allow-kubeconfig-exec-and-files"}
	}
	return nil
}
