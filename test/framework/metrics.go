package framework

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric reads one series from g: a counter's or gauge's value, or a
// histogram's sample count, of the first series of family name whose
// labels include every name/value pair given. A series that does not
// exist reads 0, as a counter not yet incremented does.
func Metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// ScrapeOperator reads the operator's HTTPS metrics endpoint at addr with
// token (none if empty), failing the test when it does not answer.
func ScrapeOperator(t testing.TB, addr, token string) (int, string) {
	t.Helper()
	code, body, err := Scrape(addr, token)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return code, body
}

// Scrape reads the operator's HTTPS metrics endpoint at addr with token
// (none if empty), as a Prometheus ServiceMonitor with insecureSkipVerify
// does: the operator's certificate is self-signed.
func Scrape(addr, token string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed, as in the shipped ServiceMonitor
	}}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, string(body), err
}
