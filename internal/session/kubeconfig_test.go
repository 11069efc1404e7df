package session

import (
	"errors"
	"fmt"
	"testing"
)

const kubeconfigTemplate = `apiVersion: v1
kind: Config
clusters:
- name: member
  cluster:
    server: https://127.0.0.1:6443
%s
users:
- name: admin
  user:
%s
contexts:
- name: member
  context: {cluster: member, user: admin}
current-context: member
`

func kubeconfig(cluster, user string) []byte {
	return []byte(fmt.Sprintf(kubeconfigTemplate, cluster, user))
}

func TestKubeconfigPolicy(t *testing.T) {
	const token = "    token: abc"
	for _, tc := range []struct {
		name       string
		kubeconfig []byte
		allow      bool
		reason     string // "" means accepted
	}{
		{"token", kubeconfig("", token), false, ""},
		{"garbage", []byte("{not yaml: ["), false, ReasonKubeconfigInvalid},
		{"no context", []byte("apiVersion: v1\nkind: Config\n"), false, ReasonKubeconfigInvalid},
		{"exec", kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/steal}"), false, ReasonExecPluginRefused},
		{"exec allowed", kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true, interactiveMode: Never}"), true, ""},
		{"auth provider", kubeconfig("", "    auth-provider: {name: oidc, config: {}}"), false, ReasonExecPluginRefused},
		{"token file", kubeconfig("", "    tokenFile: /var/run/secrets/token"), false, ReasonLocalFileRefused},
		{"client cert file", kubeconfig("", "    client-certificate: /etc/cert.pem\n    client-key: /etc/key.pem"), false, ReasonLocalFileRefused},
		{"CA file", kubeconfig("    certificate-authority: /etc/ca.pem", token), false, ReasonLocalFileRefused},
		{"broken CA data", kubeconfig("    certificate-authority-data: bm90IGEgY2VydGlmaWNhdGU=", token), false, ReasonCertificateDataBroken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := KubeconfigPolicy{AllowExecAndFiles: tc.allow}.RESTConfig(tc.kubeconfig)
			if tc.reason == "" {
				if err != nil || cfg == nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			var cerr *ConfigError
			if !errors.As(err, &cerr) {
				t.Fatalf("want a *ConfigError with reason %s, got %v", tc.reason, err)
			}
			if cerr.Reason != tc.reason || cerr.Message == "" {
				t.Fatalf("reason %q message %q, want reason %q", cerr.Reason, cerr.Message, tc.reason)
			}
		})
	}
}
