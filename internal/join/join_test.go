package join

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
)

func caPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "member-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestAccessFor(t *testing.T) {
	ca := caPEM(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		cluster clientcmdapi.Cluster
		server  string
		want    memberAccess
		warns   []string // parts of the warnings, in order
		err     string   // part of the error; "" means none
	}{
		{"CA data", clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthorityData: ca, TLSServerName: "api.member"},
			"", memberAccess{Server: "https://10.0.0.1:6443", CAData: ca, TLSServerName: "api.member"}, nil, ""},
		{"CA file read here", clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthority: caFile},
			"", memberAccess{Server: "https://10.0.0.1:6443", CAData: ca}, nil, ""},
		{"server given", clientcmdapi.Cluster{Server: "https://127.0.0.1:6443", CertificateAuthorityData: ca},
			"https://member.internal:6443", memberAccess{Server: "https://member.internal:6443", CAData: ca}, nil, ""},
		{"no CA", clientcmdapi.Cluster{Server: "https://member.example.com"},
			"", memberAccess{Server: "https://member.example.com"}, []string{"has no CA"}, ""},
		{"proxy dropped", clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthorityData: ca, ProxyURL: "socks5://bastion:1080"},
			"", memberAccess{Server: "https://10.0.0.1:6443", CAData: ca}, []string{"proxy socks5://bastion:1080"}, ""},
		{"insecure", clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", InsecureSkipTLSVerify: true}, "", memberAccess{}, nil, "insecure-skip-tls-verify"},
		{"plain http", clientcmdapi.Cluster{Server: "http://10.0.0.1:8080", CertificateAuthorityData: ca}, "", memberAccess{}, nil, "not https"},
		{"no URL", clientcmdapi.Cluster{Server: "10.0.0.1"}, "", memberAccess{}, nil, "not a URL"},
		{"CA file missing", clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthority: caFile + ".gone"}, "", memberAccess{}, nil, "reading its CA file"},
		{"CA garbage", clientcmdapi.Cluster{Server: "https://10.0.0.1:6443", CertificateAuthorityData: []byte("nope")}, "", memberAccess{}, nil, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := accessFor("member-admin", &tc.cluster, tc.server)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Server != tc.want.Server || !bytes.Equal(got.CAData, tc.want.CAData) || got.TLSServerName != tc.want.TLSServerName {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if len(got.Warnings) != len(tc.warns) {
				t.Fatalf("warnings %q, want %d", got.Warnings, len(tc.warns))
			}
			for i, w := range tc.warns {
				if !strings.Contains(got.Warnings[i], w) {
					t.Fatalf("warning %q, want one containing %q", got.Warnings[i], w)
				}
			}
		})
	}
}

// The kubeconfig join writes is one the operator accepts under its default
// policy: a token and CA data, nothing that runs or reads anything.
func TestKubeconfigHoldsOnlyTokenAndCA(t *testing.T) {
	ca := caPEM(t)
	a := &memberAccess{Server: "https://10.0.0.1:6443", CAData: ca, TLSServerName: "api.member"}
	raw, err := a.kubeconfig("edge", "nodemirror-hub", "the-token")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(raw)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CurrentContext != "edge" || len(cfg.Contexts) != 1 || len(cfg.Clusters) != 1 || len(cfg.AuthInfos) != 1 {
		t.Fatalf("want one context, cluster and user:\n%s", raw)
	}
	if u := cfg.AuthInfos["nodemirror-hub"]; u == nil || u.Token != "the-token" || u.Exec != nil || u.AuthProvider != nil || u.TokenFile != "" || u.ClientCertificate != "" || len(u.ClientCertificateData) != 0 {
		t.Fatalf("user holds more than a token:\n%s", raw)
	}
	rc, err := member.Policy{}.RESTConfig(raw)
	if err != nil {
		t.Fatalf("the operator refuses it: %v", err)
	}
	if rc.Host != a.Server || rc.BearerToken != "the-token" || !bytes.Equal(rc.CAData, ca) || rc.ServerName != "api.member" {
		t.Fatalf("rest.Config %+v", rc)
	}
	if _, err := a.kubeconfig("edge", "nodemirror-hub", ""); err == nil {
		t.Fatal("an empty token was accepted")
	}
}

func TestHubObjects(t *testing.T) {
	var buf bytes.Buffer
	if err := printObjects(&buf, "yaml", hubSecret("fleet", "edge-kubeconfig", []byte("kubeconfig bytes")), hubManagedCluster("fleet", "edge", "edge-kubeconfig")); err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(buf.String(), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("want 2 documents:\n%s", buf.String())
	}
	var secret struct {
		Kind     string
		Type     string
		Metadata struct {
			Name, Namespace string
			Labels          map[string]string
		}
		Data map[string][]byte
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &secret); err != nil {
		t.Fatal(err)
	}
	if secret.Kind != "Secret" || secret.Type != "Opaque" || secret.Metadata.Labels[fleetv1.KubeconfigSecretLabel] != "true" ||
		string(secret.Data[fleetv1.DefaultKubeconfigKey]) != "kubeconfig bytes" || secret.Metadata.Namespace != "fleet" {
		t.Fatalf("Secret:\n%s", docs[0])
	}
	var mc fleetv1.ManagedCluster
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &mc); err != nil {
		t.Fatal(err)
	}
	if mc.Kind != "ManagedCluster" || mc.Namespace != "fleet" || mc.Name != "edge" || mc.Spec.KubeconfigSecretRef != (fleetv1.SecretKeyRef{Name: "edge-kubeconfig", Key: "kubeconfig"}) {
		t.Fatalf("ManagedCluster:\n%s", docs[1])
	}
	buf.Reset()
	if err := printObjects(&buf, "json", hubManagedCluster("fleet", "edge", "s")); err != nil {
		t.Fatal(err)
	}
	var list struct {
		Kind  string
		Items []map[string]any
	}
	if err := json.Unmarshal(buf.Bytes(), &list); err != nil || list.Kind != "List" || len(list.Items) != 1 {
		t.Fatalf("json %v:\n%s", err, buf.String())
	}
}

// Bad flags are refused before any cluster is contacted.
func TestFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"join", "edge", "--hub-context", "hub"}, "--member-context is required"},
		{[]string{"join", "edge", "--member-context", "m"}, "--hub-context is required"},
		{[]string{"join", "Edge!", "--member-context", "m", "--hub-context", "h"}, `cluster name "Edge!"`},
		{[]string{"join", "edge", "--member-context", "m", "--hub-context", "h", "-n", "Fleet"}, `--namespace "Fleet"`},
		{[]string{"join", "edge", "--member-context", "m", "--hub-context", "h", "--token-ttl", "5m"}, "shorter than the 10m0s"},
		{[]string{"join", "edge", "--member-context", "m", "--hub-context", "h", "--credential", "password"}, `--credential "password"`},
		{[]string{"join", "edge", "--member-context", "m", "--hub-context", "h", "-o", "yaml"}, "add --dry-run"},
		{[]string{"join", "edge", "--member-context", "m", "--dry-run", "-o", "table"}, `-o "table"`},
		{[]string{"join", "edge", "--member-context", "m", "--hub-context", "h", "--rotate"}, "--rotate is for --credential service-account-token"},
		{[]string{"join", "edge", "--member-context", "m", "--hub-context", "h", "--request-timeout", "0s"}, "--request-timeout must be positive"},
		{[]string{"join", "edge", "--member-context", "nope", "--hub-context", "h", "--kubeconfig", "testdata/none.yaml"}, `member context "nope"`},
		{[]string{"unjoin", "edge"}, "--hub-context is required"},
		{[]string{"unjoin", "edge", "--hub-context", "h", "--wait-timeout", "0s"}, "--wait-timeout must be positive"},
		{[]string{"join"}, "accepts 1 arg"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			cmd := NewCommand("nodemirror")
			cmd.SetArgs(tc.args)
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := cmd.ExecuteContext(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestPluginName(t *testing.T) {
	for binary, want := range map[string]string{"nodemirror": "nodemirror", "kubectl-nodemirror": "kubectl nodemirror"} {
		if got := NewCommand(binary).DisplayName(); got != want {
			t.Errorf("%s: display name %q, want %q", binary, got, want)
		}
	}
}

func TestExpiryText(t *testing.T) {
	now := time.Now()
	if got := expiryText(&credential{}); got != "it does not expire" {
		t.Errorf("no expiry: %q", got)
	}
	granted := &credential{Expiry: now.Add(8760 * time.Hour), Requested: now.Add(8760 * time.Hour)}
	if got := expiryText(granted); !strings.Contains(got, "(in 365 days)") || strings.Contains(got, "caps") {
		t.Errorf("granted: %q", got)
	}
	capped := &credential{Expiry: now.Add(48 * time.Hour), Requested: now.Add(8760 * time.Hour)}
	if got := expiryText(capped); !strings.Contains(got, "(in 48h)") || !strings.Contains(got, "sooner than the 365 days asked for") {
		t.Errorf("capped: %q", got)
	}
}
