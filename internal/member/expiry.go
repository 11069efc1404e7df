package member

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// Kinds of credential CredentialExpiry reports.
const (
	// CredentialToken is a bearer token (BearerToken or BearerTokenFile).
	CredentialToken = fleetv1.CredentialTypeToken
	// CredentialClientCertificate is a TLS client certificate (CertData or
	// CertFile).
	CredentialClientCertificate = fleetv1.CredentialTypeClientCertificate
)

// MaxCredentialBytes bounds what CredentialExpiry reads and decodes: a
// token, a token file, a certificate file.
const MaxCredentialBytes = 64 << 10

// CredentialExpiry says when the credential of cfg stops working, as far as
// the credential itself tells: the exp claim of a bearer token that is a JWT
// (read, not verified: the member's API server is the judge of the
// signature), or the NotAfter of the client certificate (the first
// certificate of CertData, or of CertFile when cfg names one; the Policy
// has already decided whether files may be used).
//
// kind is CredentialToken or CredentialClientCertificate, or "" when cfg
// carries neither (an exec or auth-provider plugin, basic auth, nothing).
// expiry is zero when the credential does not say: a token that is not a
// JWT, a JWT without exp (a legacy ServiceAccount token), no credential.
// With both a token and a certificate, the earlier expiry is reported.
// err is set when the credential says something that cannot be read: a
// JWT whose exp is not a number, certificate data without a certificate,
// a credential larger than MaxCredentialBytes, an unreadable file.
func CredentialExpiry(cfg *rest.Config) (expiry time.Time, kind string, err error) {
	if cfg == nil {
		return time.Time{}, "", nil
	}
	type found struct {
		expiry time.Time
		kind   string
	}
	var all []found
	token, hasToken := cfg.BearerToken, cfg.BearerToken != ""
	if !hasToken && cfg.BearerTokenFile != "" {
		raw, err := readBounded(cfg.BearerTokenFile)
		if err != nil {
			return time.Time{}, CredentialToken, fmt.Errorf("token file: %w", err)
		}
		token, hasToken = strings.TrimSpace(string(raw)), true
	}
	if hasToken {
		exp, err := tokenExpiry(token)
		if err != nil {
			return time.Time{}, CredentialToken, err
		}
		all = append(all, found{exp, CredentialToken})
	}
	certData := cfg.CertData
	if len(certData) == 0 && cfg.CertFile != "" {
		certData, err = readBounded(cfg.CertFile)
		if err != nil {
			return time.Time{}, CredentialClientCertificate, fmt.Errorf("client certificate file: %w", err)
		}
	}
	if len(certData) > 0 {
		exp, err := certificateExpiry(certData)
		if err != nil {
			return time.Time{}, CredentialClientCertificate, err
		}
		all = append(all, found{exp, CredentialClientCertificate})
	}
	if len(all) == 0 {
		return time.Time{}, "", nil
	}
	best := all[0]
	for _, f := range all[1:] {
		if !f.expiry.IsZero() && (best.expiry.IsZero() || f.expiry.Before(best.expiry)) {
			best = f
		}
	}
	return best.expiry, best.kind, nil
}

// tokenExpiry returns the exp claim of a JWT, zero for a token that is not
// one or has no exp.
func tokenExpiry(token string) (time.Time, error) {
	if len(token) > MaxCredentialBytes {
		return time.Time{}, fmt.Errorf("bearer token of %d bytes is larger than %d", len(token), MaxCredentialBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, nil
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if !decodeSegment(parts[0], &header) || header.Alg == "" {
		return time.Time{}, nil
	}
	var claims map[string]json.RawMessage
	if !decodeSegment(parts[1], &claims) {
		return time.Time{}, nil
	}
	raw, ok := claims["exp"]
	if !ok || string(raw) == "null" {
		return time.Time{}, nil
	}
	var exp json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&exp); err != nil {
		return time.Time{}, errors.New("bearer token is a JWT whose exp claim is not a number")
	}
	f, err := exp.Float64()
	if err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
		return time.Time{}, fmt.Errorf("bearer token is a JWT whose exp claim %s is not a time", exp)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// decodeSegment decodes a base64url JWT segment (padded or not) holding a
// JSON object.
func decodeSegment(seg string, into any) bool {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(seg, "="))
	if err != nil {
		return false
	}
	return len(raw) > 0 && raw[0] == '{' && json.Unmarshal(raw, into) == nil
}

func certificateExpiry(data []byte) (time.Time, error) {
	if len(data) > MaxCredentialBytes {
		return time.Time{}, fmt.Errorf("client certificate data of %d bytes is larger than %d", len(data), MaxCredentialBytes)
	}
	for remaining := data; ; {
		var block *pem.Block
		block, remaining = pem.Decode(remaining)
		if block == nil {
			return time.Time{}, errors.New("client certificate data holds no PEM CERTIFICATE block")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("client certificate: %w", err)
		}
		return cert.NotAfter.UTC(), nil
	}
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxCredentialBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > MaxCredentialBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxCredentialBytes)
	}
	return raw, nil
}
