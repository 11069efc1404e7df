package member

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// Limits bound what one member may make the operator read and wait for.
// Zero values take the defaults.
type Limits struct {
	// ProbeBytes caps the body of /readyz, /healthz, /livez and /version
	// (default 1 MiB).
	ProbeBytes int64
	// ResponseBytes caps any other response, such as a page of a node
	// list (default 128 MiB).
	ResponseBytes int64
	// WatchEventBytes caps one event of a watch stream (default 8 MiB).
	WatchEventBytes int64
	// RequestTimeout bounds a request that is not a watch, body included
	// (default 1m).
	RequestTimeout time.Duration
	// WatchTimeout bounds a whole watch (default 15m; informers start a
	// new one every 5 to 10 minutes anyway), and HeaderTimeout the wait
	// for any response's headers (default 30s).
	WatchTimeout  time.Duration
	HeaderTimeout time.Duration
}

func (l *Limits) defaults() {
	if l.ProbeBytes <= 0 {
		l.ProbeBytes = 1 << 20
	}
	if l.ResponseBytes <= 0 {
		l.ResponseBytes = 128 << 20
	}
	if l.WatchEventBytes <= 0 {
		l.WatchEventBytes = 8 << 20
	}
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = time.Minute
	}
	if l.WatchTimeout <= 0 {
		l.WatchTimeout = 15 * time.Minute
	}
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = 30 * time.Second
	}
}

// ResponseTooLargeError is a member response cut off at its limit.
type ResponseTooLargeError struct {
	Path  string
	Limit int64
	// PerEvent is set for a watch event over the limit.
	PerEvent bool
}

func (e *ResponseTooLargeError) Error() string {
	what := "response"
	if e.PerEvent {
		what = "watch event"
	}
	return fmt.Sprintf("member %s to %s exceeds %d bytes", what, e.Path, e.Limit)
}

// ReportWatchEventsTooLarge makes every watch of clients built from cfg
// call report when a member event over the limit ends it. client-go's
// watch decoder turns the error that cut the stream into the text of a
// watch Error event, and the reflector only logs an error that ends a
// watch: the typed error is seen here, where the body is read, or not at
// all.
func ReportWatchEventsTooLarge(cfg *rest.Config, report func(*ResponseTooLargeError)) {
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && isWatch(req) {
				resp.Body = &reportingBody{ReadCloser: resp.Body, report: report}
			}
			return resp, err
		})
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// reportingBody reports the per-event ResponseTooLargeError its read meets.
type reportingBody struct {
	io.ReadCloser
	report func(*ResponseTooLargeError)
}

func (b *reportingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var tooLarge *ResponseTooLargeError
	if err != nil && errors.As(err, &tooLarge) && tooLarge.PerEvent {
		b.report(tooLarge)
	}
	return n, err
}

// RedirectError is a member answer that asked to go elsewhere: the
// operator never follows it, since the credentials would go along.
type RedirectError struct {
	Path   string
	Status int
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("member answered %s with a redirect (%d); redirects are not followed", e.Path, e.Status)
}

// boundedTransport enforces Limits and refuses redirects.
type boundedTransport struct {
	next   http.RoundTripper
	limits Limits
}

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	watch := isWatch(req)
	timeout := t.limits.RequestTimeout
	if watch {
		timeout = t.limits.WatchTimeout
	}
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	headers := time.AfterFunc(t.limits.HeaderTimeout, cancel)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	headers.Stop()
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		_ = resp.Body.Close()
		cancel()
		return nil, &RedirectError{Path: req.URL.Path, Status: resp.StatusCode}
	}
	limit, perEvent := t.limits.ResponseBytes, false
	switch {
	case watch:
		limit, perEvent = t.limits.WatchEventBytes, true
	case isProbe(req.URL.Path):
		limit = t.limits.ProbeBytes
	}
	resp.Body = &boundedBody{body: resp.Body, cancel: cancel, limit: limit, perEvent: perEvent, path: req.URL.Path,
		lengthPrefixed: perEvent && isProtobuf(resp.Header.Get("Content-Type"))}
	return resp, nil
}

func isWatch(req *http.Request) bool {
	w := req.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// isProtobuf tells a protobuf watch stream, whose events are frames of a
// 4-byte big-endian length and that many bytes (the encoding client-go's
// generated clients ask for), from a JSON one.
func isProtobuf(contentType string) bool {
	return strings.HasPrefix(contentType, "application/vnd.kubernetes.protobuf")
}

func isProbe(path string) bool {
	switch path {
	case "/readyz", "/healthz", "/livez", "/version":
		return true
	}
	return false
}

// boundedBody fails a read that takes the body past its limit: the whole
// body, or, for a watch, one event: in JSON the bytes since the last
// newline (the API server ends every JSON watch event with one, and JSON
// never holds a raw one); in protobuf a frame whose length prefix is over
// the limit, refused before its bytes arrive (a newline is just another
// byte in protobuf, so counting them would bound nothing).
type boundedBody struct {
	body           io.ReadCloser
	cancel         context.CancelFunc
	limit          int64
	perEvent       bool
	lengthPrefixed bool
	path           string
	n              int64
	err            error

	// For length-prefixed frames: the bytes of the frame left to pass, or
	// the part of the next length prefix read so far.
	frameLeft int64
	prefix    []byte
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	switch {
	case b.lengthPrefixed:
		if !b.frames(p[:n]) {
			b.err = &ResponseTooLargeError{Path: b.path, Limit: b.limit, PerEvent: true}
			_ = b.Close()
			return 0, b.err
		}
		return n, err
	case b.perEvent:
		for chunk := p[:n]; len(chunk) > 0; {
			i := bytes.IndexByte(chunk, '\n')
			if i < 0 {
				b.n += int64(len(chunk))
				break
			}
			if b.n+int64(i) > b.limit {
				b.n += int64(i)
				break
			}
			b.n = 0
			chunk = chunk[i+1:]
		}
	default:
		b.n += int64(n)
	}
	if b.n > b.limit {
		b.err = &ResponseTooLargeError{Path: b.path, Limit: b.limit, PerEvent: b.perEvent}
		_ = b.Close()
		return 0, b.err
	}
	return n, err
}

// frames follows length-prefixed frames through chunk; it is false once a
// frame announces more bytes than the limit.
func (b *boundedBody) frames(chunk []byte) bool {
	for len(chunk) > 0 {
		if b.frameLeft > 0 {
			skip := min(b.frameLeft, int64(len(chunk)))
			b.frameLeft -= skip
			chunk = chunk[skip:]
			continue
		}
		take := min(4-len(b.prefix), len(chunk))
		b.prefix = append(b.prefix, chunk[:take]...)
		chunk = chunk[take:]
		if len(b.prefix) < 4 {
			return true
		}
		b.frameLeft = int64(binary.BigEndian.Uint32(b.prefix))
		b.prefix = b.prefix[:0]
		if b.frameLeft > b.limit {
			return false
		}
	}
	return true
}

func (b *boundedBody) Close() error {
	err := b.body.Close()
	b.cancel()
	return err
}
