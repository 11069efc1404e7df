package sidecar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
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
type connection struct {
	s     *Server
	ws    *websocket.Conn
	user  *User
	token string
	log   logr.Logger
	out   *fanout.Outbox

	mu   sync.Mutex // guards subs: the reader and the reviewer change them
	subs map[string]*subscription
}

type subscription struct {
	kind *kindInfo
	sub  *fanout.Subscription
}

func (c *connection) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		c.mu.Lock()
		for _, s := range c.subs {
			s.kind.broker.Unsubscribe(s.sub)
		}
		c.s.metrics.subscriptions.Sub(float64(len(c.subs)))
		c.subs = nil
		c.mu.Unlock()
		c.out.Close()
		wg.Wait()
		_ = c.ws.CloseNow()
	}()
	wg.Go(func() { c.writeLoop(ctx, cancel) })
	wg.Go(func() { c.pingLoop(ctx, cancel) })
	if !c.s.opts.InsecureNoAuth {
		wg.Go(func() { c.reviewLoop(ctx, cancel) })
	}
	c.readLoop(ctx)
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
		if typ != websocket.MessageText {
			c.out.PushError("", protocol.BadRequest("binary messages are not supported: send JSON text"))
			continue
		}
		c.handle(ctx, data)
	}
}

func (c *connection) handle(ctx context.Context, data []byte) {
	m, status := protocol.Decode(data)
	if status != nil {
		id := ""
		if m != nil && protocol.ValidID(m.ID) {
			id = m.ID
		}
		c.out.PushError(id, status)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.Type {
	case protocol.TypeUnsubscribe:
		s, ok := c.subs[m.ID]
		if !ok {
			c.out.PushError(m.ID, protocol.NewStatus(http.StatusNotFound, metav1.StatusReasonNotFound, fmt.Sprintf("no subscription %q", m.ID)))
			return
		}
		s.kind.broker.Unsubscribe(s.sub)
		delete(c.subs, m.ID)
		c.s.metrics.subscriptions.Dec()
	case protocol.TypeSubscribe:
		c.subscribe(ctx, m)
	}
}

func (c *connection) subscribe(ctx context.Context, m *protocol.ClientMessage) {
	if _, ok := c.subs[m.ID]; ok {
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusConflict, metav1.StatusReasonAlreadyExists, fmt.Sprintf("subscription %q exists: unsubscribe first or pick another id", m.ID)))
		return
	}
	if len(c.subs) >= c.s.opts.MaxSubscriptionsPerConn {
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, fmt.Sprintf("at most %d subscriptions per connection", c.s.opts.MaxSubscriptionsPerConn)))
		return
	}
	k := c.s.kinds[m.Kind]
	allowed, reason, err := c.s.auth.Allowed(ctx, c.user, k.resource, m.Namespace)
	if err != nil {
		c.log.Error(err, "Cannot authorize subscription")
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "cannot check authorization with the hub; retry later"))
		return
	}
	if !allowed {
		c.s.metrics.authDenials.WithLabelValues("forbidden").Inc()
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusForbidden, metav1.StatusReasonForbidden, forbiddenMessage(c.user, k.resource, m.Namespace, reason)))
		return
	}
	f := fanout.Filter{Namespace: m.Namespace}
	if len(m.Clusters) > 0 {
		f.Clusters = map[string]bool{}
		for _, cl := range m.Clusters {
			f.Clusters[cl] = true
		}
	}
	s := &subscription{kind: k, sub: &fanout.Subscription{ID: m.ID, Filter: f, Out: c.out}}
	if err := k.broker.Subscribe(s.sub, m.ResourceVersion); err != nil {
		// The upgrade waited for the first lists, and brokers stay synced.
		c.out.PushError(m.ID, protocol.NewStatus(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, err.Error()+": subscribe again shortly"))
		return
	}
	c.subs[m.ID] = s
	c.s.metrics.subscriptions.Inc()
}

// writeLoop sends what the outbox holds, one message at a time, so that
// while a slow client's write is in flight its pending events conflate.
func (c *connection) writeLoop(ctx context.Context, cancel context.CancelFunc) {
	defer cancel()
	var buf []byte // reused: the websocket copies what it sends
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.out.Ready():
		}
		if !c.drain(ctx, &buf) {
			return
		}
	}
}

// drain writes everything pending. Every message must be written within
// WriteTimeout; the deadline is renewed per message only once half of it
// is spent, since a timer per message costs more than the write.
func (c *connection) drain(ctx context.Context, buf *[]byte) bool {
	var wd writeDeadline
	defer wd.stop()
	for {
		it, overflow := c.out.Pop()
		if overflow {
			c.s.metrics.slowCloses.Inc()
			c.log.Info("Closing a client that fell too far behind", "user", c.user.Name)
			_ = c.ws.Close(protocol.CloseResume, "too far behind: reconnect and resume from your last resourceVersion")
			return false
		}
		if it == nil {
			return true
		}
		if now := c.s.clock.Now(); wd.ctx == nil || wd.at.Sub(now) < c.s.opts.WriteTimeout/2 {
			wd.renew(ctx, now.Add(c.s.opts.WriteTimeout))
		}
		*buf = it.AppendEncoded((*buf)[:0])
		if err := c.ws.Write(wd.ctx, websocket.MessageText, *buf); err != nil {
			if !errors.Is(err, context.Canceled) {
				c.log.V(1).Info("Cannot write to client; closing", "err", err)
			}
			return false
		}
		c.s.metrics.sent.Inc()
	}
}

// writeDeadline is a context with a deadline that drain renews.
type writeDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc
	at     time.Time
}

func (d *writeDeadline) renew(parent context.Context, at time.Time) {
	d.stop()
	d.at = at
	d.ctx, d.cancel = context.WithDeadline(parent, at)
}

func (d *writeDeadline) stop() {
	if d.cancel != nil {
		d.cancel()
	}
}

// reviewLoop asks again, every ReviewInterval, whether the token is still
// valid and each subscription still allowed (through the same brief cache),
// so that a revoked token or RoleBinding ends the stream it granted.
func (c *connection) reviewLoop(ctx context.Context, cancel context.CancelFunc) {
	ticker := c.s.clock.NewTicker(c.s.opts.ReviewInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
		u, err := c.s.auth.Authenticate(ctx, c.token)
		if err != nil {
			continue // the hub is unreachable: keep serving what was granted
		}
		if u == nil {
			c.s.metrics.authDenials.WithLabelValues("unauthenticated").Inc()
			c.log.Info("Token no longer valid; closing")
			_ = c.ws.Close(protocol.CloseUnauthorized, "the hub no longer accepts this token: sign in again")
			cancel()
			return
		}
		c.mu.Lock()
		subs := maps.Clone(c.subs)
		c.mu.Unlock()
		for id, s := range subs {
			allowed, reason, err := c.s.auth.Allowed(ctx, c.user, s.kind.resource, s.sub.Filter.Namespace)
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
					"access revoked, subscription ended: "+forbiddenMessage(c.user, s.kind.resource, s.sub.Filter.Namespace, reason)))
			}
			c.mu.Unlock()
		}
	}
}

func (c *connection) pingLoop(ctx context.Context, cancel context.CancelFunc) {
	defer cancel()
	ticker := c.s.clock.NewTicker(c.s.opts.PingInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
		pctx, done := context.WithTimeout(ctx, c.s.opts.PingInterval/2)
		err := c.ws.Ping(pctx)
		done()
		if err != nil {
			if ctx.Err() == nil {
				// A peer that does not answer pings would not answer a
				// close handshake either.
				c.log.V(1).Info("Client did not answer a ping; closing", "err", err)
				_ = c.ws.CloseNow()
			}
			return
		}
	}
}
