package framework

import (
	"errors"
	"net/http"
	"sync"
	"time"
)

// HubLink is one client's connection to the hub, as a test sees it: every
// request the hub answered, with when it was sent and answered, and a
// switch that cuts the client off (its requests then fail without reaching
// the hub, as a killed process's would never arrive). Wrap a rest.Config's
// transport with it.
type HubLink struct {
	mu       sync.Mutex
	cut      bool
	requests []Request
}

// Request is one request the hub answered.
type Request struct {
	// Method is the HTTP method, LIST for a GET of a collection, WATCH
	// for a watch.
	Method              string
	Namespace, Resource string
	Sent, Answered      time.Time
}

// IsWrite is true for a POST, PUT, PATCH or DELETE.
func (r Request) IsWrite() bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// Wrap is a rest.Config WrapTransport function.
func (h *HubLink) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		h.mu.Lock()
		cut := h.cut
		h.mu.Unlock()
		if cut {
			return nil, errors.New("cut off from the hub by the test")
		}
		r := Request{Method: req.Method, Sent: time.Now()}
		r.Namespace, r.Resource = resourceOf(req.URL.Path)
		if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
			r.Method = "WATCH"
		} else if req.Method == http.MethodGet && isCollection(req.URL.Path) {
			r.Method = "LIST"
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		r.Answered = time.Now()
		h.mu.Lock()
		h.requests = append(h.requests, r)
		h.mu.Unlock()
		return resp, nil
	})
}

// Cut makes every later request fail before it leaves the client.
func (h *HubLink) Cut() {
	h.mu.Lock()
	h.cut = true
	h.mu.Unlock()
}

// Requests are the requests answered so far, in the order they were.
func (h *HubLink) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.requests...)
}
