package framework

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"

	"github.com/nodemirror/nodemirror/internal/sidecar"
)

// Sidecar is a sidecar running in-process for a test, with its own
// metrics registry and a counter of its hub requests.
type Sidecar struct {
	// URL is http://host:port.
	URL      string
	Addr     string
	Requests *RequestCounter
	Registry *prometheus.Registry
	stop     func()
}

// SidecarOptions say how a test's sidecar runs.
type SidecarOptions struct {
	// Addr to listen on; a free loopback port when empty. A sidecar started
	// again on the address of a stopped one waits for the port to free.
	Addr string
	// Wrap, when set, sees every hub request (after the counter).
	Wrap func(http.RoundTripper) http.RoundTripper
	// NoWait returns at once instead of waiting until /readyz says ok.
	NoWait bool
}

// StartSidecar runs a sidecar against hub until the test ends or Stop is
// called. opts.Log, Registerer and Gatherer are set for the test.
func StartSidecar(t testing.TB, hub *rest.Config, opts sidecar.Options, so SidecarOptions) *Sidecar {
	t.Helper()
	sc := &Sidecar{Requests: &RequestCounter{}, Registry: prometheus.NewRegistry()}
	cfg := rest.CopyConfig(hub)
	cfg.WrapTransport = sc.Requests.Wrap
	if so.Wrap != nil {
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return so.Wrap(sc.Requests.Wrap(rt)) }
	}
	opts.Registerer, opts.Gatherer = sc.Registry, sc.Registry
	opts.Log = testr.NewWithInterface(t, testr.Options{Verbosity: 1})
	s, err := sidecar.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	addr := so.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	for i := 0; ; i++ {
		if l, err = net.Listen("tcp", addr); err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	sc.Addr = l.Addr().String()
	sc.URL = "http://" + sc.Addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, l) }()
	stopped := false
	sc.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("sidecar: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("sidecar did not stop within 10s")
		}
	}
	t.Cleanup(sc.stop)
	if !so.NoWait {
		WaitFor(t, 10*time.Second, "sidecar ready", func() bool {
			resp, err := http.Get(sc.URL + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	return sc
}

// Stop stops the sidecar and waits until it has.
func (sc *Sidecar) Stop() { sc.stop() }

// Metric reads one of the sidecar's metrics (see Metric).
func (sc *Sidecar) Metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	return Metric(t, sc.Registry, name, labels...)
}
