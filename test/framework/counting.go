package framework

import (
	"io"
	"net/http"
	"strings"
	"sync"
)

// RequestCounter counts the requests a client sends, by method, namespace
// and resource; watches count as method "WATCH". Wrap a rest.Config's
// transport with it.
type RequestCounter struct {
	mu     sync.Mutex
	counts map[requestKey]int
	open   map[requestKey]int // watches whose response is still being read
}

type requestKey struct{ method, namespace, resource string }

// Wrap is a rest.Config WrapTransport function.
func (c *RequestCounter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		c.mu.Lock()
		if c.counts == nil {
			c.counts = map[requestKey]int{}
		}
		ns, res := resourceOf(req.URL.Path)
		method := req.Method
		if w := req.URL.Query().Get("watch"); w == "true" || w == "1" {
			method = "WATCH"
		}
		key := requestKey{method, ns, res}
		c.counts[key]++
		c.mu.Unlock()
		resp, err := rt.RoundTrip(req)
		if err != nil || method != "WATCH" {
			return resp, err
		}
		c.mu.Lock()
		if c.open == nil {
			c.open = map[requestKey]int{}
		}
		c.open[key]++
		c.mu.Unlock()
		resp.Body = &watchBody{ReadCloser: resp.Body, done: func() {
			c.mu.Lock()
			c.open[key]--
			c.mu.Unlock()
		}}
		return resp, nil
	})
}

// OpenWatches is the number of watches on resource (any namespace) whose
// response is still open.
func (c *RequestCounter) OpenWatches(resource string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.open {
		if k.resource == resource {
			n += v
		}
	}
	return n
}

type watchBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *watchBody) Close() error {
	b.once.Do(b.done)
	return b.ReadCloser.Close()
}

// Writes is the number of POST, PUT, PATCH and DELETE requests on
// resource in namespace ("" for any namespace).
func (c *RequestCounter) Writes(namespace, resource string) int {
	n := 0
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		n += c.Count(m, namespace, resource)
	}
	return n
}

// Count is the number of requests with this method on resource in
// namespace ("" for any namespace).
func (c *RequestCounter) Count(method, namespace, resource string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.counts {
		if k.method == method && k.resource == resource && (namespace == "" || k.namespace == namespace) {
			n += v
		}
	}
	return n
}

// Total is the number of requests of any kind.
func (c *RequestCounter) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.counts {
		n += v
	}
	return n
}

// resourceOf picks namespace and resource out of an API path such as
// /apis/g/v/namespaces/ns/res/name or /api/v1/res; a subresource is appended
// after a '/'. Other paths (/readyz, /version) come back whole.
func resourceOf(path string) (namespace, resource string) {
	namespace, parts, ok := apiPath(path)
	switch {
	case !ok:
		return "", path
	case len(parts) >= 3:
		return namespace, parts[0] + "/" + parts[2]
	}
	return namespace, parts[0]
}

// isCollection: the path names a resource, not one object of it.
func isCollection(path string) bool {
	_, parts, ok := apiPath(path)
	return ok && len(parts) == 1
}

// apiPath splits an API path after its group and version, and after
// namespaces/<ns>: what is left is resource[/name[/subresource]]. ok is
// false for paths outside /api and /apis.
func apiPath(path string) (namespace string, parts []string, ok bool) {
	parts = strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return "", nil, false
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		namespace, parts = parts[1], parts[2:]
	}
	return namespace, parts, true
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
