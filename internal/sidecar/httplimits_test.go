package sidecar_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// Keep-alive connections that stay idle are closed.
func TestIdleConnectionsAreClosed(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{IdleTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", ts.Addr); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("an idle keep-alive connection: read %v, want EOF (closed by the sidecar)", err)
	}
}

// Past MaxConnections, new connections wait until one closes.
func TestConnectionCap(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{MaxConnections: 2, IdleTimeout: time.Hour})
	http.DefaultClient.CloseIdleConnections() // the readiness probe's
	a := dial(t, ts, aliceToken, viaHeader)
	dial(t, ts, aliceToken, viaHeader)
	healthz := func(timeout time.Duration) error {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: timeout}
		resp, err := c.Get(ts.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := healthz(time.Second); err == nil {
		t.Fatal("a third connection was served while two websockets held the cap")
	}
	_ = a.conn.CloseNow()
	framework.WaitFor(t, 10*time.Second, "a place to free", func() bool { return healthz(2*time.Second) == nil })
}

// A big list is streamed from the objects' stored JSON: the sidecar does not
// build the body, yet says its length.
func TestListsStream(t *testing.T) {
	const objects = 120
	pad := strings.Repeat("x", 60<<10)
	for i := range objects {
		s := framework.NewSnapshot("team-b", "biglist", fmt.Sprintf("n%d", i))
		s.Annotations = map[string]string{"pad": pad}
		mustCreate(t, s)
	}
	t.Cleanup(func() {
		_ = hub.DeleteAllOf(ctx, &fleetv1.NodeSnapshot{}, client.InNamespace("team-b"), client.MatchingLabels{fleetv1.ClusterLabel: "biglist"})
	})
	ts := startSidecar(t, sidecar.Options{})
	url := ts.URL + "/api/v1/namespaces/team-b/nodesnapshots?cluster=biglist"
	framework.WaitFor(t, 10*time.Second, "the sidecar to hold them", func() bool {
		code, body, _ := get(t, url, adminToken)
		return code == http.StatusOK && strings.Count(body, `"kind":"NodeSnapshot"`) == objects
	})

	before := heapStats()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	after := heapStats()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list: %d %v", resp.StatusCode, err)
	}
	if resp.ContentLength != n || resp.Header.Get("Content-Length") != strconv.FormatInt(n, 10) {
		t.Errorf("Content-Length %d (%q) for a body of %d bytes", resp.ContentLength, resp.Header.Get("Content-Length"), n)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a list of %d KiB allocated %d KiB in this process", n>>10, allocated>>10)
	if allocated > uint64(n)/4 {
		t.Errorf("a list of %d KiB allocated %d KiB: the body was buffered", n>>10, allocated>>10)
	}
	// And the body is still the list it was.
	_, body, _ := get(t, url, adminToken)
	var list fleetv1.NodeSnapshotList
	if err := json.Unmarshal([]byte(body), &list); err != nil || list.Kind != "NodeSnapshotList" || list.APIVersion != fleetv1.GroupVersion.String() || list.ResourceVersion == "" || len(list.Items) != objects {
		t.Fatalf("list: %v, %s %s rv %q, %d items", err, list.APIVersion, list.Kind, list.ResourceVersion, len(list.Items))
	}
	code, body, h := get(t, ts.URL+"/api/v1/namespaces/team-b/nodesnapshots?cluster=nothing-here", adminToken)
	if want := `{"apiVersion":"fleet.nodemirror.io/v1alpha1","kind":"NodeSnapshotList","metadata":{"resourceVersion":`; code != http.StatusOK || !strings.HasPrefix(body, want) || !strings.HasSuffix(body, `"items":[]}`) || h.Get("Content-Length") != strconv.Itoa(len(body)) {
		t.Errorf("empty list: %d %s (Content-Length %s)", code, body, h.Get("Content-Length"))
	}
}

func heapStats() runtime.MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// One user may have MaxListsPerUser lists in progress; more are refused
// with a 429 Status. Lists are held in their access review here.
func TestConcurrentListsPerUser(t *testing.T) {
	var holding atomic.Bool
	var held atomic.Int64
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseAll := func() { releaseOnce.Do(func() { close(release) }) }
	holdReviews := func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			if holding.Load() && strings.HasSuffix(req.URL.Path, "/subjectaccessreviews") {
				held.Add(1)
				select {
				case <-release:
				case <-req.Context().Done():
					return nil, req.Context().Err()
				}
			}
			return rt.RoundTrip(req)
		})
	}
	ts := framework.StartSidecar(t, hubCfg, sidecar.Options{MaxListsPerUser: 1}, framework.SidecarOptions{Wrap: holdReviews})
	t.Cleanup(releaseAll) // before the sidecar stops: a failing test must not leave it stuck
	list := func(ns string) (int, string) {
		code, body, _ := get(t, ts.URL+"/api/v1/namespaces/"+ns+"/nodesnapshots", adminToken)
		return code, body
	}
	// The token is reviewed first, so that only the list is in progress.
	if code, body, _ := get(t, ts.URL+"/api/v1/whoami", adminToken); code != http.StatusOK {
		t.Fatalf("whoami: %d %s", code, body)
	}
	holding.Store(true)
	first := make(chan int, 1)
	go func() {
		code, _ := list("lists-1")
		first <- code
	}()
	framework.WaitFor(t, 10*time.Second, "the first list in its review", func() bool { return held.Load() == 1 })
	// Bounded, so that a list held like the first one fails the test.
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/api/v1/namespaces/lists-2/nodesnapshots", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("a second list at once: %v, want a 429 Status", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"kind":"Status"`) {
		t.Errorf("a second list at once: %d %s, want a 429 Status", resp.StatusCode, body)
	}
	releaseAll()
	if code := <-first; code != http.StatusOK {
		t.Errorf("the first list: %d", code)
	}
	if code, body := list("lists-3"); code != http.StatusOK {
		t.Errorf("a list after the first ended: %d %s", code, body)
	}
}

// Metrics are served on their own listener; the public port does not
// serve them.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := sidecar.New(hubCfg, sidecar.Options{Registerer: reg, Gatherer: reg, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	public, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- s.Run(sctx, public) }()
	go func() { done <- s.ServeMetrics(sctx, metrics) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()
	pub := "http://" + public.Addr().String()
	framework.WaitFor(t, 10*time.Second, "ready", func() bool {
		code, _, _ := get(t, pub+"/readyz", "")
		return code == http.StatusOK
	})
	if code, body, _ := get(t, pub+"/metrics", ""); code == http.StatusOK || strings.Contains(body, "nodemirror_sidecar") {
		t.Errorf("public /metrics: %d %.200s", code, body)
	}
	code, body, _ := get(t, "http://"+metrics.Addr().String()+"/metrics", "")
	if code != http.StatusOK || !strings.Contains(body, "nodemirror_sidecar_clients") {
		t.Errorf("metrics listener: %d %.200s", code, body)
	}
}
