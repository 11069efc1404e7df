package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/nodemirror/nodemirror/internal/fanout"
)

// frameConnPair is a real websocket over loopback TCP: the server side
// accepted through upgradeWriter, as the sidecar does, the client side a
// coder/websocket client.
func frameConnPair(t *testing.T) (*websocket.Conn, *frameConn, *websocket.Conn) {
	t.Helper()
	type accepted struct {
		ws *websocket.Conn
		fc *frameConn
	}
	got := make(chan accepted, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uw := &upgradeWriter{ResponseWriter: w}
		ws, err := websocket.Accept(uw, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		got <- accepted{ws, uw.conn}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	client.SetReadLimit(-1)
	t.Cleanup(func() { _ = client.CloseNow() })
	a := <-got
	t.Cleanup(func() { _ = a.ws.CloseNow() })
	// The server reads too: pongs reach Ping through its reader.
	go func() {
		for {
			if _, _, err := a.ws.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	if a.fc == nil || a.fc.raw == nil {
		t.Fatal("the accepted connection has no socket to write to without a wait")
	}
	return a.ws, a.fc, client
}

func item(i, size int) *fanout.Item {
	raw := fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, bytes.Repeat([]byte("x"), size))
	return &fanout.Item{Subscription: "s", Type: "MODIFIED", Object: &fanout.Object{Raw: raw}, ResumeFrom: fmt.Sprint(i)}
}

// Data frames written without a wait, in part when the socket is full,
// and the library's control frames share one connection: a client that
// stops reading and starts again reads every message whole and in order,
// and its ping is answered.
func TestFrameConnWritesWithoutWaiting(t *testing.T) {
	ws, fc, client := frameConnPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first := item(0, 100)
	if !fc.TryWriteText(first) {
		t.Fatal("an idle connection refused a small message")
	}
	if _, msg, err := client.Read(ctx); err != nil || !bytes.Equal(msg, first.Encode()) {
		t.Fatalf("read %q, %v; want %q", msg, err, first.Encode())
	}

	// The client reads nothing now: fill the socket until a write is
	// refused, which must happen without waiting.
	var sent []*fanout.Item
	start := time.Now()
	for i := 1; ; i++ {
		it := item(i, 64<<10)
		if !fc.TryWriteText(it) {
			break
		}
		sent = append(sent, it)
		if i > 10_000 {
			t.Fatal("the socket never filled up")
		}
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("filling the socket took %s: a write waited", time.Since(start))
	}
	if len(sent) == 0 {
		t.Fatal("no message went out before the socket filled")
	}
	partial := fc.HasTail()
	t.Logf("%d messages of 64 KiB taken before the socket filled; last one in part: %v", len(sent), partial)
	if partial && fc.TryWriteText(item(-1, 10)) {
		t.Fatal("a message was taken while the rest of another waits")
	}

	// The writer sends what waits and then a queued message; the
	// library pings meanwhile. Both wait for the client.
	last := item(len(sent)+1, 10)
	wrote := make(chan error, 1)
	go func() { wrote <- fc.WriteText(last) }()
	pinged := make(chan error, 1)
	go func() { pinged <- ws.Ping(ctx) }()
	sent = append(sent, last)

	for i, want := range sent {
		_, msg, err := client.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(msg, want.Encode()) {
			t.Fatalf("message %d: got %d bytes starting %.40q, want %d bytes starting %.40q", i, len(msg), msg, len(want.Encode()), want.Encode())
		}
	}
	if err := <-wrote; err != nil {
		t.Fatalf("WriteText: %v", err)
	}
	go func() { _, _, _ = client.Read(ctx) }() // answers the ping
	if err := <-pinged; err != nil {
		t.Fatalf("ping: %v", err)
	}
	if fc.HasTail() {
		t.Fatal("a tail is left after the client read everything")
	}

	// After the close frame is due, no data frame may go.
	fc.CloseData()
	if fc.TryWriteText(item(0, 10)) {
		t.Fatal("a data frame was taken after CloseData")
	}
	if err := fc.WriteText(item(0, 10)); !errors.Is(err, errDataClosed) {
		t.Fatalf("WriteText after CloseData: %v, want errDataClosed", err)
	}
}

// Frames of every header length (7-bit, 16-bit and 64-bit payload
// lengths) reach a real client whole.
func TestFrameConnHeaderLengths(t *testing.T) {
	_, fc, client := frameConnPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, size := range []int{0, 60, 125, 126, 200, 65_000, 65_536, 70_000, 300_000} {
		it := item(size, size)
		want := it.Encode()
		errc := make(chan error, 1)
		go func() { errc <- fc.WriteText(it) }()
		_, msg, err := client.Read(ctx)
		if err != nil {
			t.Fatalf("payload of %d bytes: %v", len(want), err)
		}
		if !bytes.Equal(msg, want) {
			t.Fatalf("payload of %d bytes: read %d bytes", len(want), len(msg))
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}
