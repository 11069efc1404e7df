package member

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/framer"
)

func TestNetworkRefusesWhatIsDeniedBeforeDialing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	deny := Network{Deny: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}
	for _, tc := range []struct {
		net  Network
		host string
		why  string // "" means allowed
	}{
		{deny, "127.0.0.1", "loopback"},
		{deny, "localhost", "loopback"},
		{deny, "::1", "loopback"},
		{deny, "169.254.169.254", "link-local"},
		{deny, "fe80::1", "link-local"},
		{deny, "0.0.0.0", "unspecified"},
		{deny, "224.0.0.1", "multicast"},
		{deny, "10.96.0.1", "10.96.0.0/12"},
		{deny, "::ffff:127.0.0.1", "loopback"},
		{Network{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, "127.0.0.1", ""},
	} {
		conn, err := tc.net.DialContext(context.Background(), "tcp", net.JoinHostPort(tc.host, port))
		if tc.why == "" {
			if err != nil {
				t.Errorf("%s: %v, want a connection", tc.host, err)
				continue
			}
			conn.Close()
			<-accepted
			continue
		}
		var denied *DeniedError
		if !errors.As(err, &denied) || !strings.Contains(denied.Error(), tc.why) {
			t.Errorf("%s: %v, want refused as %s", tc.host, err, tc.why)
		}
	}
	select {
	case <-accepted:
		t.Error("a denied address was dialed")
	default:
	}
}

func TestBoundedTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = w.Write([]byte(strings.Repeat("x", 2000)))
		case "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		case "/api/v1/nodes":
			// Events of 900 bytes pass a 1000-byte event limit, however
			// they are cut into reads; one of 1100 does not.
			for _, n := range []int{900, 900, 900, 1100} {
				_, _ = w.Write([]byte(strings.Repeat("e", n) + "\n"))
			}
		case "/api/v1/pods":
			// Protobuf frames, framed as the API server frames them: a
			// newline every 100 bytes must not reset the count.
			w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf;stream=watch")
			frames := framer.NewLengthDelimitedFrameWriter(w)
			for _, n := range []int{900, 900, 1100, 900} {
				_, _ = frames.Write([]byte(strings.Repeat(strings.Repeat("p", 99)+"\n", n/100)))
				w.(http.Flusher).Flush()
			}
		}
	}))
	defer srv.Close()
	limits := Limits{ProbeBytes: 1000, WatchEventBytes: 1000}
	limits.defaults()
	c := &http.Client{Transport: &boundedTransport{next: http.DefaultTransport, limits: limits}}
	read := func(path string) (string, error) {
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	var tooLarge *ResponseTooLargeError
	if _, err := read("/readyz"); !errors.As(err, &tooLarge) || tooLarge.PerEvent {
		t.Errorf("a 2000-byte probe: %v, want a ResponseTooLargeError", err)
	}
	var redirect *RedirectError
	if _, err := read("/redirect"); !errors.As(err, &redirect) {
		t.Errorf("a redirect: %v, want a RedirectError", err)
	}
	body, err := read("/api/v1/nodes?watch=true")
	if !errors.As(err, &tooLarge) || !tooLarge.PerEvent {
		t.Errorf("watch: %v, want a per-event ResponseTooLargeError", err)
	}
	for _, line := range strings.Split(body, "\n") {
		if len(line) > 1000 {
			t.Errorf("an event of %d bytes was read past the limit", len(line))
		}
	}
	body, err = read("/api/v1/pods?watch=true")
	if !errors.As(err, &tooLarge) || !tooLarge.PerEvent {
		t.Errorf("protobuf watch: %v, want a per-event ResponseTooLargeError", err)
	}
	// Two whole frames of 4+900 bytes and the third's prefix, at most; at
	// least the first (the read that meets the third may drop the rest of
	// the second: the stream fails there anyway).
	if len(body) > 2*904+4 {
		t.Errorf("read %d bytes of a protobuf watch, past the frame over the limit", len(body))
	}
	if len(body) < 904 {
		t.Errorf("read %d bytes of a protobuf watch: frames within the limit were refused", len(body))
	}
}
