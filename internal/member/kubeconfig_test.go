package member

import (
	"errors"
	"fmt"
	"testing"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
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

func TestPolicy(t *testing.T) {
	const token = "    token: abc"
	for _, tc := range []struct {
		name       string
		kubeconfig []byte
		allow      bool
		reason     string // "" means accepted
	}{
		{"token", kubeconfig("", token), false, ""},
		{"garbage", []byte("{not yaml: ["), false, fleetv1.ReasonKubeconfigInvalid},
		{"no context", []byte("apiVersion: v1\nkind: Config\n"), false, fleetv1.ReasonKubeconfigInvalid},
		{"exec", kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/steal}"), false, fleetv1.ReasonExecPluginRefused},
		{"exec allowed", kubeconfig("", "    exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true, interactiveMode: Never}"), true, ""},
		{"auth provider", kubeconfig("", "    auth-provider: {name: oidc, config: {}}"), false, fleetv1.ReasonExecPluginRefused},
		{"token file", kubeconfig("", "    tokenFile: /var/run/secrets/token"), false, fleetv1.ReasonLocalFileRefused},
		{"client cert file", kubeconfig("", "    client-certificate: /etc/cert.pem\n    client-key: /etc/key.pem"), false, fleetv1.ReasonLocalFileRefused},
		{"CA file", kubeconfig("    certificate-authority: /etc/ca.pem", token), false, fleetv1.ReasonLocalFileRefused},
		{"broken CA data", kubeconfig("    certificate-authority-data: bm90IGEgY2VydGlmaWNhdGU=", token), false, fleetv1.ReasonCertificateDataInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Policy{AllowExecAndFiles: tc.allow}.RESTConfig(tc.kubeconfig)
			if tc.reason == "" {
				if err != nil || cfg == nil {
					t.Fatalf("want accepted, got %v", err)
				}
				return
			}
			var cerr *Refusal
			if !errors.As(err, &cerr) {
				t.Fatalf("want a *Refusal with reason %s, got %v", tc.reason, err)
			}
			if cerr.Reason != tc.reason || cerr.Message == "" {
				t.Fatalf("reason %q message %q, want reason %q", cerr.Reason, cerr.Message, tc.reason)
			}
		})
	}
}
