package member

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func jwt(header, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(claims)) + "." + enc([]byte("not checked"))
}

func certPEM(t *testing.T, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: "nodemirror-hub"},
		NotBefore:    notAfter.Add(-48 * time.Hour),
		NotAfter:     notAfter,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCredentialExpiry(t *testing.T) {
	const header = `{"alg":"RS256","kid":"k"}`
	exp := time.Date(2027, 3, 4, 5, 6, 7, 0, time.UTC)
	certExp := time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)
	cert := certPEM(t, certExp)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(jwt(header, `{"exp":1804136767}`)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "cert.pem")
	// A key block before the certificate is skipped.
	if err := os.WriteFile(certFile, append([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), cert...), 0o600); err != nil {
		t.Fatal(err)
	}
	bigFile := filepath.Join(dir, "big")
	if err := os.WriteFile(bigFile, make([]byte, MaxCredentialBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		cfg    *rest.Config
		expiry time.Time
		kind   string
		err    string // a part of the error; "" means none
	}{
		{"nil config", nil, time.Time{}, "", ""},
		{"no credential", &rest.Config{Host: "https://m"}, time.Time{}, "", ""},
		{"basic auth", &rest.Config{Username: "u", Password: "p"}, time.Time{}, "", ""},
		{"exec plugin", &rest.Config{ExecProvider: &clientcmdapi.ExecConfig{Command: "aws"}}, time.Time{}, "", ""},
		{"JWT with exp", &rest.Config{BearerToken: jwt(header, `{"iss":"kubernetes/serviceaccount","exp":1804136767,"sub":"system:serviceaccount:nodemirror-member:nodemirror-hub"}`)}, exp, CredentialToken, ""},
		{"JWT with fractional exp", &rest.Config{BearerToken: jwt(header, `{"exp":1804136767.5}`)}, exp.Add(500 * time.Millisecond), CredentialToken, ""},
		{"padded JWT segments", &rest.Config{BearerToken: strings.Replace(jwt(header, `{"exp":1804136767}`), ".", "==.", 1)}, exp, CredentialToken, ""},
		{"legacy ServiceAccount JWT, no exp", &rest.Config{BearerToken: jwt(header, `{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:a:b"}`)}, time.Time{}, CredentialToken, ""},
		{"exp null", &rest.Config{BearerToken: jwt(header, `{"exp":null}`)}, time.Time{}, CredentialToken, ""},
		{"opaque token", &rest.Config{BearerToken: "abcdef.0123456789abcdef"}, time.Time{}, CredentialToken, ""},
		{"three parts, not base64", &rest.Config{BearerToken: "a!b.c!d.e"}, time.Time{}, CredentialToken, ""},
		{"three parts, header not JSON", &rest.Config{BearerToken: jwt("hello", `{"exp":1}`)}, time.Time{}, CredentialToken, ""},
		{"header without alg", &rest.Config{BearerToken: jwt(`{"typ":"JWT"}`, `{"exp":1804136767}`)}, time.Time{}, CredentialToken, ""},
		{"exp a string", &rest.Config{BearerToken: jwt(header, `{"exp":"tomorrow"}`)}, time.Time{}, CredentialToken, "not a number"},
		{"exp negative", &rest.Config{BearerToken: jwt(header, `{"exp":-5}`)}, time.Time{}, CredentialToken, "not a time"},
		{"exp absurd", &rest.Config{BearerToken: jwt(header, `{"exp":1e300}`)}, time.Time{}, CredentialToken, "not a time"},
		{"token too large", &rest.Config{BearerToken: strings.Repeat("a", MaxCredentialBytes+1)}, time.Time{}, CredentialToken, "larger than"},
		{"token file", &rest.Config{BearerTokenFile: tokenFile}, exp, CredentialToken, ""},
		{"token file too large", &rest.Config{BearerTokenFile: bigFile}, time.Time{}, CredentialToken, "larger than"},
		{"token file missing", &rest.Config{BearerTokenFile: filepath.Join(dir, "none")}, time.Time{}, CredentialToken, "no such file"},
		{"client certificate", &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: cert, KeyData: []byte("k")}}, certExp, CredentialClientCertificate, ""},
		{"client certificate file", &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertFile: certFile}}, certExp, CredentialClientCertificate, ""},
		{"certificate data wins over file", &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: cert, CertFile: bigFile}}, certExp, CredentialClientCertificate, ""},
		{"certificate garbage", &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: []byte("not pem")}}, time.Time{}, CredentialClientCertificate, "no PEM CERTIFICATE"},
		{"certificate bad DER", &rest.Config{TLSClientConfig: rest.TLSClientConfig{CertData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}})}}, time.Time{}, CredentialClientCertificate, "client certificate"},
		{"token and earlier certificate", &rest.Config{BearerToken: jwt(header, `{"exp":1804136767}`), TLSClientConfig: rest.TLSClientConfig{CertData: cert}}, certExp, CredentialClientCertificate, ""},
		{"non-expiring token and certificate", &rest.Config{BearerToken: "opaque", TLSClientConfig: rest.TLSClientConfig{CertData: cert}}, certExp, CredentialClientCertificate, ""},
		{"token earlier than certificate", &rest.Config{BearerToken: jwt(header, `{"exp":1700000000}`), TLSClientConfig: rest.TLSClientConfig{CertData: cert}}, time.Unix(1700000000, 0).UTC(), CredentialToken, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expiry, kind, err := CredentialExpiry(tc.cfg)
			if tc.err == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if !expiry.Equal(tc.expiry) || kind != tc.kind {
				t.Fatalf("got %v, %q; want %v, %q", expiry, kind, tc.expiry, tc.kind)
			}
		})
	}
}
