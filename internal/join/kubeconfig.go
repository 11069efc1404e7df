package join

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// memberAccess is what the hub needs to reach a member: where, and how to
// know it is the member.
type memberAccess struct {
	Server        string
	CAData        []byte // PEM; empty: the system roots of the operator's image
	TLSServerName string
	Warnings      []string
}

// accessFor works out the hub's way to the member from the member context's
// cluster entry: its server (or server, when given), its CA (data, or the
// file the entry names, read here on the joining machine so that the hub
// gets the data) and its TLS server name. A cluster that skips TLS
// verification or speaks plain HTTP is refused: the token would go to
// whoever answers.
func accessFor(memberContext string, c *clientcmdapi.Cluster, server string) (*memberAccess, error) {
	a := &memberAccess{Server: c.Server, TLSServerName: c.TLSServerName}
	if server != "" {
		a.Server = server
	}
	u, err := url.Parse(a.Server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("member server %q is not a URL such as https://10.0.0.1:6443", a.Server)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("member server %q is not https: the hub's token would travel unencrypted", a.Server)
	}
	if c.InsecureSkipTLSVerify {
		return nil, fmt.Errorf("member context %q skips TLS verification (insecure-skip-tls-verify): give its cluster the CA (certificate-authority-data) so that the hub can verify the member", memberContext)
	}
	switch {
	case len(c.CertificateAuthorityData) > 0:
		a.CAData = c.CertificateAuthorityData
	case c.CertificateAuthority != "":
		raw, err := os.ReadFile(c.CertificateAuthority)
		if err != nil {
			return nil, fmt.Errorf("member context %q: reading its CA file: %w", memberContext, err)
		}
		a.CAData = raw
	default:
		a.Warnings = append(a.Warnings, fmt.Sprintf("member context %q has no CA: the operator will trust the member's serving certificate only if its own system roots do", memberContext))
	}
	if len(a.CAData) > 0 && !x509.NewCertPool().AppendCertsFromPEM(a.CAData) {
		return nil, fmt.Errorf("member context %q: its CA holds no PEM certificate", memberContext)
	}
	if c.ProxyURL != "" {
		a.Warnings = append(a.Warnings, fmt.Sprintf("member context %q goes through proxy %s; the hub's kubeconfig does not (the operator refuses proxies by default) and dials %s itself", memberContext, c.ProxyURL, a.Server))
	}
	return a, nil
}

// kubeconfig returns a kubeconfig with one context, name, that reaches the
// member as a and authenticates with token: no exec plugin, no auth
// provider, no file, no proxy.
func (a *memberAccess) kubeconfig(name, user, token string) ([]byte, error) {
	if token == "" {
		return nil, errors.New("no token to put in the kubeconfig")
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: a.Server, CertificateAuthorityData: a.CAData, TLSServerName: a.TLSServerName}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	cfg.CurrentContext = name
	return clientcmd.Write(*cfg)
}
