package sidecar_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"

	"github.com/nodemirror/nodemirror/internal/protocol"
	"github.com/nodemirror/nodemirror/internal/sidecar"
	"github.com/nodemirror/nodemirror/test/framework"
)

// heapInUse is the live heap of this process, which holds the sidecar.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A client that floods the sidecar with invalid messages and reads none of
// the answers must cost it little: each error quotes a bounded part of its
// message, and past the limit the connection is closed with 4002.
func TestInvalidMessagesCloseTheConnectionAndCostLittle(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{PingInterval: time.Hour})
	conn := dialSilent(t, ts, aliceToken)
	framework.WaitFor(t, 5*time.Second, "client counted", func() bool { return ts.Metric(t, "nodemirror_sidecar_clients") == 1 })

	// 4 KiB, the most that is answered with an ERROR rather than a close,
	// of a character JSON escapes as six bytes.
	msg := []byte(`{"type":"subscribe","id":"x","namespace":"` + strings.Repeat("<", protocol.MaxMessageBytes-44) + `"}`)
	if len(msg) != protocol.MaxMessageBytes {
		t.Fatalf("message of %d bytes", len(msg))
	}
	base := heapInUse()
	const flood = 3000
	sent := 0
	for ; sent < flood; sent++ {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := conn.Write(wctx, websocket.MessageText, msg)
		cancel()
		if err != nil {
			break // the sidecar closed the connection
		}
	}
	grown := int64(heapInUse()) - int64(base)
	t.Logf("sent %d invalid messages of %d bytes; heap grew %d KiB", sent, len(msg), grown>>10)
	if grown > 8<<20 {
		t.Errorf("the heap grew by %d MiB while a client sent invalid messages and read nothing", grown>>20)
	}

	// Reading now: a few errors, then the close code.
	var closed error
	errors, big := 0, 0
	for closed == nil {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, data, err := conn.Read(rctx)
		cancel()
		if err != nil {
			closed = err
			break
		}
		if len(data) > 1024 && big == 0 {
			t.Errorf("an ERROR of %d bytes: %.200s", len(data), data)
		}
		if len(data) > 1024 {
			big++
		}
		errors++
	}
	if websocket.CloseStatus(closed) != protocol.CloseInvalidMessages {
		t.Fatalf("after %d errors: want close %d, got %v", errors, protocol.CloseInvalidMessages, closed)
	}
	if big > 1 {
		t.Errorf("%d ERRORs over 1 KiB", big)
	}
	if errors > 21 {
		t.Errorf("%d errors before the close; the limit is 20 within a minute", errors)
	}
	if got := ts.Metric(t, "nodemirror_sidecar_closes_total", "code", fmt.Sprint(protocol.CloseInvalidMessages)); got != 1 {
		t.Errorf("closes with 4002 counted %v", got)
	}
	// Other clients are not affected.
	d := dial(t, ts, aliceToken, viaHeader)
	d.send(subscribe("s", "team-a", "none"))
	d.untilBookmark("s")
}

// Errors are counted within a window: a client that makes a mistake now
// and then is never closed for it.
func TestOccasionalInvalidMessagesAreTolerated(t *testing.T) {
	ts := startSidecar(t, sidecar.Options{InvalidMessageLimit: 3, InvalidMessageWindow: 200 * time.Millisecond})
	c := dial(t, ts, aliceToken, viaHeader)
	for i := range 8 {
		c.send(`{"type":"unsubscribe","id":"never"}`)
		if e := c.mustNext(); e.Code != 404 {
			t.Fatalf("message %d: %+v", i, e)
		}
		time.Sleep(100 * time.Millisecond) // at most 2 within any window: never 4
	}
	time.Sleep(300 * time.Millisecond) // the window passes
	for i := range 4 {
		c.send(`{"type":"unsubscribe","id":"never"}`)
		if i < 3 {
			c.mustNext()
		}
	}
	// The fourth's own ERROR may be written before the close, or dropped.
	e, err := c.next(10 * time.Second)
	if err == nil && e.Code == 404 {
		_, err = c.next(10 * time.Second)
	}
	if websocket.CloseStatus(err) != protocol.CloseInvalidMessages {
		t.Fatalf("four errors at once: want close %d, got %v %v", protocol.CloseInvalidMessages, e, err)
	}
}

// A client that stops reading while events keep coming must learn that it
// has to resume: the sidecar gives up on it once a write has taken
// WriteTimeout, and the close frame with 4000 follows the message in
// flight, so that a client that reads again gets the code.
func TestClientThatStopsReadingIsToldToResume(t *testing.T) {
	const objects = 20
	if err := framework.CreateSnapshots(ctx, hub, "team-b", "stuck", objects); err != nil {
		t.Fatal(err)
	}
	ts := startSidecar(t, sidecar.Options{WriteTimeout: 3 * time.Second, PingInterval: time.Hour})
	conn := dialSilent(t, ts, adminToken, subscribe("s", "team-b", "stuck"))
	framework.WaitFor(t, 5*time.Second, "client counted", func() bool { return ts.Metric(t, "nodemirror_sidecar_clients") == 1 })

	// Large changes until the socket buffers are full and a write stalls.
	stop := make(chan struct{})
	var churn sync.WaitGroup
	defer churn.Wait()
	churn.Go(func() {
		for round := 0; ; round++ {
			for i := range objects {
				select {
				case <-stop:
					return
				default:
				}
				patch := fmt.Sprintf(`{"metadata":{"annotations":{"pad":%q}}}`, strings.Repeat(fmt.Sprint(round%10), 64<<10))
				s := &fleetv1.NodeSnapshot{ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: fmt.Sprintf("stuck.node-%d", i)}}
				if err := hub.Patch(ctx, s, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
					t.Errorf("patch: %v", err)
					return
				}
			}
		}
	})
	// Before, the connection was dropped then; now the sidecar gives up.
	framework.WaitFor(t, 2*time.Minute, "the sidecar to give up on the client", func() bool {
		return ts.Metric(t, "nodemirror_sidecar_slow_client_closes_total") > 0 || ts.Metric(t, "nodemirror_sidecar_clients") == 0
	})
	// At once: the write in flight has WriteTimeout more to finish. The
	// churn may go on meanwhile; the client has no subscription left.
	close(stop)

	// The client reads again: what was in flight, then the code.
	var closed error
	for closed == nil {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _, err := conn.Read(rctx)
		cancel()
		closed = err
	}
	if websocket.CloseStatus(closed) != protocol.CloseResume {
		t.Fatalf("a client that stopped reading: want close %d, got %v", protocol.CloseResume, closed)
	}
	if got := ts.Metric(t, "nodemirror_sidecar_closes_total", "code", fmt.Sprint(protocol.CloseResume)); got != 1 {
		t.Errorf("closes with 4000 counted %v", got)
	}
	framework.WaitFor(t, 10*time.Second, "the client gone", func() bool { return ts.Metric(t, "nodemirror_sidecar_clients") == 0 })
	if got := ts.Metric(t, "nodemirror_sidecar_subscriptions"); got != 0 {
		t.Errorf("subscriptions gauge = %v after the close", got)
	}
}
