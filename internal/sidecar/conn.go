package sidecar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodemirror/nodemirror/internal/fanout"
	"github.com/nodemirror/nodemirror/internal/protocol"
)

// connection is one websocket connection: a reader that handles requests, a
// writer that drains the outbox, a pinger, and a reviewer that checks now
// and then that the token and the access it was given still hold.
//
// A message that finds nothing queued before it is written at once by
// whoever delivers it, if the socket takes it without a wait (see
// frameConn); any other is queued, and the writer writes it. Only the
// writer sends the close frame, so that a close always follows whole
// messages: whoever decides to close (requestClose) stops what is queued,
// and the writer sends the close frame once the message in flight, if any,
// is out.
type connection struct {
	s     *Server
	ws    *websocket.Conn
	fc    *frameConn // under ws: data frames are written here
	token string
	log   logr.Logger
	out   *fanout.Outbox
	// user is replaced by each review with the groups and extra the hub
	// gives now, so that leaving a group ends what it granted.
	user atomic.Pointer[User]

	mu   sync.Mutex // guards subs: the reader and the reviewer change them
	subs map[string]*subscription

	// refusals holds when the last InvalidMessageLimit refused messages
	// came, oldest at next; the reader alone uses them.
	refusals []time.Time
	next     int

	// writing is true while the writer is inside a Write.
	writing atomic.Bool

	closeOnce   sync.Once
	closing     chan struct{} // closed by requestClose
	closed      atomic.Bool   // set by requestClose: cheaper to ask per message
	closeCode   websocket.StatusCode
	closeReason string
}

type subscription struct {
	kind *kindInfo
	sub  *fanout.Subscription
}

func newConnection(s *Server, ws *websocket.Conn, fc *frameConn, u *User, token string, log logr.Logger) *connection {
	c := &connection{
		s: s, ws: ws, fc: fc, token: token, log: log,
		out:     fanout.NewOutbox(s.opts.OutboxLimit, s.opts.OutboxBytes, s.metrics.conflated.Inc),
		subs:    map[string]*subscription{},
		closing: make(chan struct{}),
	}
	c.user.Store(u)
	fc.wake = c.out.Wake
	c.out.SetDirect(c.writeNow)
	return c
}

// writeNow is the outbox's direct writer: it sends a message that waits
// for nothing if the socket takes it without a wait.
func (c *connection) writeNow(it *fanout.Item) bool {
	if c.closeRequested() || !c.fc.TryWriteText(it) {
		return false
	}
	c.s.metrics.sent.Inc()
	return true
}

func (c *connection) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		c.dropSubscriptions()
		c.out.Close()
		wg.Wait()
		_ = c.ws.CloseNow()
	}()
	wg.Go(func() { c.writeLoop(ctx, cancel) })
	wg.Go(func() { c.pingLoop(ctx) })
	if !c.s.opts.InsecureNoAuth {
		wg.Go(func() { c.reviewLoop(ctx) })
	}
	c.readLoop(ctx)
}

// requestClose asks the writer to close the connection with code, once:
// the first caller's code is the one sent. Nothing queued is sent any more,
// and the subscriptions end at once, so that a connection on its way out
// holds no events and costs the brokers nothing.
func (c *connection) requestClose(code websocket.StatusCode, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		c.closed.Store(true)
		close(c.closing)
		c.s.metrics.closes.WithLabelValues(fmt.Sprint(int(code))).Inc()
		if code == protocol.CloseResume {
			c.s.metrics.slowCloses.Inc()
		}
		c.dropSubscriptions()
		c.out.Close()
	})
}

func (c *connection) closeRequested() bool { return c.closed.Load() }

func (c *connection) dropSubscriptions() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.subs {
		s.kind.broker.Unsubscribe(s.sub)
	}
	c.s.metrics.subscriptions.Sub(float64(len(c.subs)))
	clear(c.subs)
}

func (c *connection) readLoop(ctx context.Context) {
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			if status := websocket.CloseStatus(err); status == -1 && ctx.Err() == nil {
				c.log.V(2).Info("Client connection ended", "err", err)
			}
			return
		}
		if c.closeRequested() {
			// Keep reading, and drop what comes, until the close
			// handshake ends: a peer whose messages are left unread
			// when the socket closes gets a reset, and may lose the
			// close frame with it.
			continue
		}
		refused := true
		if typ != websocket.MessageText {
			c.out.PushError("", protocol.BadRequest("binary messages are not supported: send JSON text"))
		} else {
			refused = c.handle(ctx, data)
		}
		if refused && c.tooManyRefusals() {
			c.s.metrics.authDenials.WithLabelValues("invalid_messages").Inc()
			c.log.Info("Closing a client that sent too many invalid messages", "limit", c.s.opts.InvalidMessageLimit, "window", c.s.opts.InvalidMessageWindow)
			c.requestClose(protocol.CloseInvalidMessages, fmt.Sprintf("more than %d invalid messages within %s", c.s.opts.InvalidMessageLimit, c.s.opts.InvalidMessageWindow))
		}
	}
}

// tooManyRefusals records a refused message and reports whether more than
// InvalidMessageLimit were refused within InvalidMessageWindow.
func (c *connection) tooManyRefusals() bool {
	now := c.s.clock.Now()
	if c.refusals == nil {
		c.refusals = make([]time.Time, c.s.opts.InvalidMessageLimit)
	}
	oldest := c.refusals[c.next]
	c.refusals[c.next] = now
	c.next = (c.next + 1) % len(c.refusals)
	return !oldest.IsZero() && now.Sub(oldest) < c.s.opts.InvalidMessageWindow
}

// handle answers one text message and reports whether it was refused
// because of what it asked (an ERROR other than the sidecar's own 503).
func (c *connection) handle(ctx context.Context, data []byte) (refused bool) {
	m, status := protocol.Decode(data)
	if status != nil {
		id := ""
		if m != nil && protocol.ValidID(m.ID) {
			id = m.ID
		}
		c.out.PushError(id, status)
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.Type {
	case protocol.TypeUnsubscribe:
		s, ok := c.subs[m.ID]
		if !ok {
			c.out.PushError(m.ID, protocol.NewStatus(http.StatusNotFound, metav1.StatusReasonNotFound, "no subscription "+protocol.Quote(m.ID)))
			return true
		}
		s.kind.broker.Unsubscribe(s.sub)
		delete(c.subs, m.ID)
		c.s.metrics.subscriptions.Dec()
	case protocol.TypeSubscribe:
		return c.subscribe(ctx, m)
	}
	return false
}

func (c *connection) subscribe(ctx context.Context, m *protocol.ClientMessage) (refused bool) {
	if _, ok := c.subs[m.ID]; ok {
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusConflict, metav1.StatusReasonAlreadyExists, fmt.Sprintf("subscription %s exists: unsubscribe first or pick another id", protocol.Quote(m.ID))))
		return true
	}
	if len(c.subs) >= c.s.opts.MaxSubscriptionsPerConn {
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, fmt.Sprintf("at most %d subscriptions per connection", c.s.opts.MaxSubscriptionsPerConn)))
		return true
	}
	k := c.s.kinds[m.Kind]
	u := c.user.Load()
	allowed, reason, err := c.s.auth.Allowed(ctx, u, verbWatch, k.resource, m.Namespace)
	if err != nil {
		c.log.Error(err, "Cannot authorize subscription")
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot check authorization with the hub; retry later"))
		return false
	}
	if !allowed {
		c.s.metrics.authDenials.WithLabelValues("forbidden").Inc()
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden, forbiddenMessage(u, verbWatch, k.resource, m.Namespace, reason)))
		return true
	}
	s := &subscription{kind: k, sub: &fanout.Subscription{ID: m.ID, Filter: fanout.NewFilter(m.Namespace, m.Clusters), Out: c.out}}
	if err := k.broker.Subscribe(s.sub, m.ResourceVersion); err != nil {
		// The upgrade waited for the first lists, and brokers stay synced.
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error()+": subscribe again shortly"))
		return false
	}
	c.subs[m.ID] = s
	c.s.metrics.subscriptions.Inc()
	return false
}

// writeLoop sends what the outbox holds, one message at a time, so that
// while a slow client's write is in flight its pending events conflate.
// When a close is requested it sends the close frame and returns.
func (c *connection) writeLoop(ctx context.Context, cancel context.CancelFunc) {
	defer cancel()
	// Writes get no context (see drain): the connection's end aborts one
	// in flight by closing the socket.
	defer context.AfterFunc(ctx, func() { _ = c.ws.CloseNow() })()
	var wd writeDeadline
	defer wd.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.closing:
			c.sendClose()
			return
		case <-c.out.Ready():
		}
		if !c.drain(ctx, &wd) {
			return
		}
	}
}

// sendClose performs the close handshake with the requested code. The
// library bounds it: 5s to write the frame, 5s for the peer's answer.
func (c *connection) sendClose() {
	c.fc.CloseData()
	if err := c.ws.Close(c.closeCode, c.closeReason); err != nil {
		c.log.V(1).Info("Close handshake did not complete", "code", int(c.closeCode), "err", err)
	}
}

// drain writes everything pending, unless a close is requested. A message
// gets at least WriteTimeout to be written; one that takes longer means
// the client stopped reading, and it is given up on with CloseResume. Its
// write is not cut off then, since half a frame would leave no way to send
// a close frame after it: it gets WriteTimeout more to finish, and the
// close frame follows it. Only if the client still reads nothing is the
// connection dropped without one: no bytes can reach a peer that does not
// read.
//
// The deadlines live as long as the writer, and the write itself gets no
// context: a context's timer and cancellation hook per message cost more
// than the rest of the message's write but the syscall.
func (c *connection) drain(ctx context.Context, wd *writeDeadline) bool {
	if c.fc.HasTail() {
		// The rest of a message written in part by writeNow.
		c.armDeadlines(wd)
		if !c.wrote(ctx, c.fc.FlushTail()) {
			return false
		}
	}
	for !c.closeRequested() {
		it, overflow := c.out.Pop()
		if overflow {
			c.log.Info("Closing a client that fell too far behind")
			c.requestClose(protocol.CloseResume, "too far behind: reconnect and resume from your last resourceVersion")
			return true
		}
		if it == nil {
			return true
		}
		c.armDeadlines(wd)
		err := c.fc.WriteText(it)
		c.out.Written()
		if !c.wrote(ctx, err) {
			return false
		}
		c.s.metrics.sent.Inc()
	}
	return true
}

// armDeadlines renews the writer's deadlines before a write that may wait,
// only once a third of them is spent: a timer per message costs more than
// the write. The write must be followed by wrote.
func (c *connection) armDeadlines(wd *writeDeadline) {
	if now := c.s.clock.Now(); wd.stuck == nil || wd.stuckAt.Sub(now) < c.s.opts.WriteTimeout {
		wd.renew(now, c.s.opts.WriteTimeout*3/2, c.s.opts.WriteTimeout, c.stuck, c.abandon)
	}
	c.writing.Store(true)
}

// wrote ends a write started after armDeadlines and reports whether the
// connection can go on.
func (c *connection) wrote(ctx context.Context, err error) bool {
	c.writing.Store(false)
	if err == nil {
		return true
	}
	switch {
	case c.closeRequested() && ctx.Err() == nil:
		c.log.Info("Client read nothing after it was given up on; dropped without a close frame", "code", int(c.closeCode))
	case !errors.Is(err, context.Canceled) && !errors.Is(err, net.ErrClosed):
		c.log.V(1).Info("Cannot write to client; closing", "err", err)
	}
	return false
}

// stuck is called when a write deadline passes: if a message is still
// being written, the client has stopped reading.
func (c *connection) stuck() {
	if !c.writing.Load() {
		return
	}
	c.log.Info("Closing a client that stopped reading", "writeTimeout", c.s.opts.WriteTimeout)
	c.requestClose(protocol.CloseResume, "stopped reading: reconnect and resume from your last resourceVersion")
}

// abandon is called when the hard write deadline passes: a write still in
// flight then is given up, and the socket closed under it.
func (c *connection) abandon() {
	if c.writing.Load() {
		_ = c.ws.CloseNow()
	}
}

// writeDeadline is the writer's pair of deadlines: at stuckAt the client
// is given up on, at stuckAt plus a grace the write is abandoned and the
// connection dropped.
type writeDeadline struct {
	stuckAt        time.Time
	stuck, abandon *time.Timer // nil until the first renew
}

// renew sets the deadlines to timeout from now, and grace after that.
func (d *writeDeadline) renew(now time.Time, timeout, grace time.Duration, onStuck, onAbandon func()) {
	d.stop()
	d.stuckAt = now.Add(timeout)
	d.stuck = time.AfterFunc(timeout, onStuck)
	d.abandon = time.AfterFunc(timeout+grace, onAbandon)
}

func (d *writeDeadline) stop() {
	if d.stuck != nil {
		d.stuck.Stop()
		d.abandon.Stop()
	}
}

// reviewLoop asks again, every ReviewInterval, whether the token is still
// valid and each subscription still allowed (through the same brief cache),
// so that a revoked token, RoleBinding or group membership ends the stream
// it granted.
func (c *connection) reviewLoop(ctx context.Context) {
	ticker := c.s.clock.NewTicker(c.s.opts.ReviewInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.closing:
			return
		case <-ticker.C():
		}
		u, err := c.s.auth.Authenticate(ctx, c.token)
		if err != nil {
			continue // the hub is unreachable: keep serving what was granted
		}
		old := c.user.Load()
		if u == nil {
			c.s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
			c.log.Info("Token no longer valid; closing")
			c.requestClose(protocol.CloseUnauthorized, "the hub no longer accepts this token: sign in again")
			return
		}
		if u.Name != old.Name || u.UID != old.UID {
			c.s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
			c.log.Info("Token now belongs to another user; closing", "newUser", u.Name)
			c.requestClose(protocol.CloseUnauthorized, "this token now belongs to another user: sign in again")
			return
		}
		c.user.Store(u)
		c.mu.Lock()
		subs := maps.Clone(c.subs)
		c.mu.Unlock()
		for id, s := range subs {
			allowed, reason, err := c.s.auth.Allowed(ctx, u, verbWatch, s.kind.resource, s.sub.Filter.Namespace)
			if err != nil || allowed {
				continue
			}
			c.mu.Lock()
			if c.subs[id] == s {
				s.kind.broker.Unsubscribe(s.sub)
				delete(c.subs, id)
				c.s.metrics.subscriptions.Dec()
				c.s.metrics.authDenials.WithLabelValues("forbidden").Inc()
				c.out.PushError(id, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden,
					"access revoked, subscription ended: "+forbiddenMessage(u, verbWatch, s.kind.resource, s.sub.Filter.Namespace, reason)))
			}
			c.mu.Unlock()
		}
	}
}

// pingLoop pings every PingInterval. A peer that does not answer within
// half of it is not reading (or is gone): it is closed with CloseResume,
// which reaches it if it reads again before the handshake times out.
func (c *connection) pingLoop(ctx context.Context) {
	ticker := c.s.clock.NewTicker(c.s.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.closing:
			return
		case <-ticker.C():
		}
		pctx, done := context.WithTimeout(ctx, c.s.opts.PingInterval/2)
		err := c.ws.Ping(pctx)
		done()
		if err != nil {
			if ctx.Err() == nil {
				c.log.V(1).Info("Client did not answer a ping; closing", "err", err)
				c.requestClose(protocol.CloseResume, "did not answer a ping: reconnect and resume from your last resourceVersion")
			}
			return
		}
	}
}
