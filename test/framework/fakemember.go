package framework

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
)

// FakeMember is a hostile "member API server": a TLS server speaking just
// enough of the Kubernetes API for a session (/readyz, /version, an empty
// node list, a node watch that never sends), whose answers a test scripts.
type FakeMember struct {
	Server *httptest.Server
	// Requests counts every request received.
	Requests atomic.Int64

	mu       sync.Mutex
	handlers map[string]http.HandlerFunc
	// closed ends handlers that would otherwise wait for their client,
	// which keeps reconnecting while its session runs.
	closed chan struct{}
}

// NewFakeMember starts a fake member on 127.0.0.1 until Close.
func NewFakeMember() *FakeMember {
	m := &FakeMember{closed: make(chan struct{})}
	m.handlers = map[string]http.HandlerFunc{
		"/readyz": func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) },
		"/version": func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.2"}`))
		},
		"/api/v1/nodes": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if v := r.URL.Query().Get("watch"); v == "true" || v == "1" {
				w.WriteHeader(http.StatusOK)
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-m.closed:
				}
				return
			}
			_, _ = w.Write([]byte(`{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`))
		},
	}
	m.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.Requests.Add(1)
		m.mu.Lock()
		h := m.handlers[r.URL.Path]
		m.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	m.Server.StartTLS()
	return m
}

// Handle scripts the answer to path (e.g. /readyz, /api/v1/nodes).
func (m *FakeMember) Handle(path string, h http.HandlerFunc) {
	m.mu.Lock()
	m.handlers[path] = h
	m.mu.Unlock()
}

// Kubeconfig is a token kubeconfig that trusts the fake member's certificate.
func (m *FakeMember) Kubeconfig() []byte {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Server.Certificate().Raw})
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: u, user: {token: fake-member-token}}]
contexts: [{name: fake, context: {cluster: fake, user: u}}]
current-context: fake
`, m.Server.URL, base64.StdEncoding.EncodeToString(ca))
}

// Done is closed when the fake member closes: scripted handlers that
// stream or wait should stop then.
func (m *FakeMember) Done() <-chan struct{} { return m.closed }

// Close stops the fake member, cutting the operator's open watches.
func (m *FakeMember) Close() {
	select {
	case <-m.closed:
		return // closed already
	default:
	}
	close(m.closed)
	m.Server.CloseClientConnections()
	m.Server.Close()
}
