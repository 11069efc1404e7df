package sidecar

import (
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nodemirror/nodemirror/internal/fanout"
)

// frameConn is a client's TCP connection under its websocket, written by
// two parties: the websocket library, which writes only control frames
// (ping, pong, close) through Write, and the sidecar, which writes every
// data frame itself. That lets a message go out from the goroutine that
// delivers it, in one write that never waits (TryWriteText), instead of
// waking the connection's writer goroutine: with a thousand clients that
// keep up, the wake-up, the scheduling and the library's framing cost more
// than the write(2). What a full socket cannot take waits for the writer.
//
// Every write holds mu for a whole frame, so frames never interleave. The
// library's control frames are small enough that it flushes each in one
// Write call.
type frameConn struct {
	net.Conn
	// raw is the socket for writes that must not wait; nil when the
	// connection is not a socket (then every data frame is written by the
	// connection's writer).
	raw syscall.RawConn

	mu sync.Mutex
	// buf assembles data frames, under mu.
	buf []byte
	// tail is what a TryWriteText could not send of its frame: the writer
	// sends it before anything else.
	tail    []byte
	hasTail atomic.Bool
	// dataClosed is set, under mu, once the close frame is due: no data
	// frame may follow it.
	dataClosed bool
	// wake tells the connection's writer that a tail waits.
	wake func()
	// writeOnce is the raw write of parts, made once so that a write
	// allocates no closure; n is what it wrote, under mu.
	writeOnce func(fd uintptr) bool
	parts     [][]byte
	n         int
}

func newFrameConn(c net.Conn) *frameConn {
	f := &frameConn{Conn: c, wake: func() {}}
	f.writeOnce = func(fd uintptr) bool {
		for {
			var err error
			if f.n, err = unix.Writev(int(fd), f.parts); err != unix.EINTR {
				return true // written, or not now: never wait here
			}
		}
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			f.raw = raw
		}
	}
	return f
}

// errDataClosed is returned for a data frame after the close frame.
var errDataClosed = errors.New("websocket close frame sent: no more data frames")

// Write writes one control frame of the websocket library, after any tail.
func (f *frameConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flushTailLocked(); err != nil {
		return 0, err
	}
	return f.Conn.Write(p)
}

// TryWriteText sends m as one text frame if that needs no wait: it reports
// false, having sent nothing, when the socket is full, another frame is
// being written or waits to be, or the socket failed (the writer then
// finds out). A frame the socket takes in part is sent: its tail waits for
// the writer, woken for it, and nothing else is tried before that.
func (f *frameConn) TryWriteText(m *fanout.Item) bool {
	if f.raw == nil || !f.mu.TryLock() {
		return false
	}
	defer f.mu.Unlock()
	if f.tail != nil || f.dataClosed {
		return false
	}
	// The frame goes in three parts, so that the object, shared by every
	// client, is not copied: the header with the envelope's head, the
	// object, the envelope's end.
	obj := m.EncodedObject()
	head := f.headerLocked(m.AppendEncodedHead, len(obj)+len(envelopeEnd))
	f.parts = append(f.parts[:0], head, obj, envelopeEnd)
	err := f.raw.Write(f.writeOnce)
	clear(f.parts) // holds no object past the write
	n := f.n
	if err != nil || n <= 0 {
		return false
	}
	if n < len(head)+len(obj)+len(envelopeEnd) {
		f.tail = slices.Concat(head, obj, envelopeEnd)[n:]
		f.hasTail.Store(true)
		f.wake()
	}
	return true
}

// WriteText sends m as one text frame, after any tail, waiting for the
// socket as long as it takes: the connection's writer bounds that wait.
func (f *frameConn) WriteText(m *fanout.Item) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.flushTailLocked(); err != nil {
		return err
	}
	if f.dataClosed {
		return errDataClosed
	}
	_, err := f.Conn.Write(f.headerLocked(m.AppendEncoded, 0))
	return err
}

// HasTail reports whether part of a frame waits to be sent.
func (f *frameConn) HasTail() bool { return f.hasTail.Load() }

// FlushTail sends what waits of a frame, waiting for the socket.
func (f *frameConn) FlushTail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.flushTailLocked()
}

func (f *frameConn) flushTailLocked() error {
	if f.tail == nil {
		return nil
	}
	_, err := f.Conn.Write(f.tail)
	if err != nil {
		return err
	}
	f.tail = nil
	f.hasTail.Store(false)
	return nil
}

// CloseData refuses data frames from now on, for the close frame to come:
// it waits for a frame being written to be out.
func (f *frameConn) CloseData() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dataClosed = true
}

// envelopeEnd is fanout.EncodedEnd, as the last part of a frame.
var envelopeEnd = []byte(fanout.EncodedEnd)

// maxFrameHeader is the longest header of an unmasked frame (RFC 6455 5.2).
const maxFrameHeader = 10

// headerLocked builds in buf a text frame of which appendPayload appends
// all but the last rest bytes: the payload is appended after room for the
// longest header, whose real length is known only then, and the header is
// written right before it.
func (f *frameConn) headerLocked(appendPayload func([]byte) []byte, rest int) []byte {
	if cap(f.buf) < maxFrameHeader {
		f.buf = make([]byte, maxFrameHeader, 2048)
	}
	f.buf = appendPayload(f.buf[:maxFrameHeader])
	n := len(f.buf) - maxFrameHeader + rest
	var header [maxFrameHeader]byte
	header[0] = 0x80 | 0x1 // FIN, text
	h := 2
	switch {
	case n < 126:
		header[1] = byte(n)
	case n <= 0xffff:
		header[1] = 126
		binary.BigEndian.PutUint16(header[2:], uint16(n))
		h = 4
	default:
		header[1] = 127
		binary.BigEndian.PutUint64(header[2:], uint64(n))
		h = 10
	}
	start := maxFrameHeader - h
	copy(f.buf[start:], header[:h])
	return f.buf[start:]
}
