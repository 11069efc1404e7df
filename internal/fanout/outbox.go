package fanout

import (
	"container/list"
	"encoding/json"
	"strconv"
	"sync"

	"github.com/nodemirror/nodemirror/internal/protocol"
)

// Item is one pending message of an Outbox.
type Item struct {
	Subscription string
	// Type is the watch event type.
	Type string
	// Object is set for ADDED, MODIFIED and DELETED.
	Object *Object
	// ResumeFrom is the envelope's resourceVersion: "" for the events of an
	// initial state.
	ResumeFrom string
	// Body is the pre-encoded object of a BOOKMARK or ERROR.
	Body []byte
	// catchUp marks the events a subscription starts with (its initial
	// state, or what it missed before resuming). They do not count against
	// the Outbox limit: a subscription must always be able to catch up,
	// and conflation bounds them by the number of objects it sees.
	catchUp bool
}

// Encode renders the item as an Envelope.
func (it *Item) Encode() []byte { return it.AppendEncoded(nil) }

// AppendEncoded appends the item's Envelope to b: the envelope is assembled
// around the shared, pre-encoded object instead of encoding it again per
// client, and a writer that reuses b allocates nothing per message.
func (it *Item) AppendEncoded(b []byte) []byte {
	b = it.AppendEncodedHead(b)
	b = append(b, it.EncodedObject()...)
	return append(b, EncodedEnd...)
}

// AppendEncodedHead appends to b what the item's Envelope holds before its
// object, which EncodedObject is and EncodedEnd follows: a writer can send
// the three without copying the object.
func (it *Item) AppendEncodedHead(b []byte) []byte {
	b = append(b, `{"subscription":`...)
	b = appendQuoted(b, it.Subscription)
	if it.ResumeFrom != "" {
		b = append(b, `,"resourceVersion":`...)
		b = appendQuoted(b, it.ResumeFrom)
	}
	b = append(b, `,"event":{"type":"`...)
	b = append(b, it.Type...)
	return append(b, `","object":`...)
}

// appendQuoted appends s as a JSON string. Subscription IDs and
// resourceVersions are plain ASCII that needs no escaping, and checking so
// is cheaper than quoting rune by rune, once per message to each client.
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return strconv.AppendQuote(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// EncodedObject is the item's object as its Envelope carries it.
func (it *Item) EncodedObject() []byte {
	if it.Object != nil {
		return it.Object.Raw
	}
	return it.Body
}

// EncodedEnd closes an Envelope after its object.
const EncodedEnd = "}}"

type itemKey struct{ subscription, namespace, name string }

// Outbox is a connection's queue of pending messages, conflated per object.
// Push never blocks; the connection's writer takes items with Pop.
type Outbox struct {
	mu    sync.Mutex
	items *list.List // of *Item, oldest first
	// index finds an object's pending item once more than scanLimit are
	// pending; below that a scan of the list does, and index is nil. A
	// client that keeps up has one item at a time, and hashing three
	// strings into a map and out again for each one was a sixth of the
	// sidecar's CPU per delivery.
	index map[itemKey]*list.Element
	live  int // pending items that are not catch-up
	limit int
	// bytes is what the pending items hold of their own (their entries
	// and control bodies; objects are shared by every connection), catch-up
	// included; past byteLimit the Outbox overflows.
	bytes, byteLimit int
	overflow         bool
	closed           bool
	ready            chan struct{}
	conflated        func()
	// direct, if set, takes messages that would wait alone (see
	// SetDirect); inflight is true while it, or the writer that popped an
	// item, is writing one, so that no message overtakes another.
	direct   func(*Item) bool
	inflight bool
}

// NewOutbox returns an Outbox that overflows past limit pending items
// (the events subscriptions catch up with aside) or past byteLimit bytes
// of its own (see ItemOverhead), catch-up included; 0 means no byte limit.
// onConflate, if not nil, is called for every conflated event.
func NewOutbox(limit, byteLimit int, onConflate func()) *Outbox {
	if onConflate == nil {
		onConflate = func() {}
	}
	return &Outbox{items: list.New(), limit: limit, byteLimit: byteLimit, ready: make(chan struct{}, 1), conflated: onConflate}
}

// SetDirect installs write, to which the Outbox hands a message instead of
// queuing it when nothing is queued or being written (except the events a
// subscription catches up with, which are queued to be conflated): a connection's
// deliverer can then send it at once, without waking the connection's
// writer, which costs more than the write itself when the client keeps up.
// write reports whether it took the message; a message it did not take is
// queued first in line. It is called without the Outbox's lock, never
// twice at a time, and never while an item taken with Pop is being
// written: a writer of an Outbox with a direct writer calls Written once
// each popped item is out. SetDirect is called before the first push.
func (o *Outbox) SetDirect(write func(*Item) bool) { o.direct = write }

// scanLimit is the most pending items found by scanning, without index.
const scanLimit = 8

func (it *Item) key() itemKey {
	if it.Object == nil {
		return itemKey{}
	}
	return itemKey{it.Subscription, it.Object.Namespace, it.Object.Name}
}

// pending is the element of key's pending item, or nil; key names an
// object (control items have the zero key and are never found).
func (o *Outbox) pending(key itemKey) *list.Element {
	if o.index != nil {
		return o.index[key]
	}
	for el := o.items.Front(); el != nil; el = el.Next() {
		if el.Value.(*Item).key() == key {
			return el
		}
	}
	return nil
}

// ItemOverhead is what one pending item costs an Outbox besides its
// control body: the list and index entries and the item itself.
const ItemOverhead = 160

func (it *Item) ownBytes() int {
	return ItemOverhead + len(it.Body) + len(it.Subscription) + len(it.ResumeFrom)
}

// Ready is signalled when items may be waiting, the Outbox overflowed or closed.
func (o *Outbox) Ready() <-chan struct{} { return o.ready }

func (o *Outbox) signal() {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// push queues an object event, merging it with a pending event for the
// same object of the same subscription.
func (o *Outbox) push(sub, typ string, obj *Object, resumeFrom string, catchUp bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.overflow {
		return
	}
	key := itemKey{sub, obj.Namespace, obj.Name}
	if el := o.pending(key); el != nil {
		o.remove(el)
		o.conflated()
		typ = merge(el.Value.(*Item).Type, typ)
		if typ == "" {
			return // added and deleted before the client saw either
		}
	}
	o.enqueueLocked(key, &Item{Subscription: sub, Type: typ, Object: obj, ResumeFrom: resumeFrom, catchUp: catchUp})
}

// enqueueLocked hands it to the direct writer if nothing is queued or being
// written, and queues it otherwise. It is called with mu held, which it
// releases around the direct write and holds again when it returns.
func (o *Outbox) enqueueLocked(key itemKey, it *Item) {
	// What a subscription catches up with comes in a batch, and is
	// conflated in the queue: a resume gets each missed object once.
	if o.direct == nil || o.inflight || o.items.Len() > 0 || it.catchUp {
		o.append(key, it, false)
		return
	}
	o.inflight = true
	o.mu.Unlock()
	taken := o.direct(it)
	o.mu.Lock()
	o.inflight = false
	switch {
	case o.closed || o.overflow:
	case !taken:
		o.append(key, it, true)
	case o.items.Len() > 0:
		o.signal() // queued by another deliverer meanwhile
	}
}

func (o *Outbox) remove(el *list.Element) {
	it := o.items.Remove(el).(*Item)
	o.bytes -= it.ownBytes()
	if o.index != nil {
		delete(o.index, it.key())
	}
	if o.items.Len() == 0 {
		o.index = nil
	}
	if !it.catchUp {
		o.live--
	}
}

// merge is the one event that tells a client what two events in a row
// told it; "" means nothing at all.
func merge(older, newer string) string {
	switch {
	case older == protocol.Added && newer == protocol.Deleted:
		return ""
	case older == protocol.Added:
		return protocol.Added
	case older == protocol.Deleted && newer != protocol.Deleted:
		return protocol.Modified
	default:
		return newer
	}
}

// pushControl queues a BOOKMARK or ERROR with its encoded object, never
// conflated.
func (o *Outbox) pushControl(sub, typ string, raw []byte, resumeFrom string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || o.overflow {
		return
	}
	o.enqueueLocked(itemKey{}, &Item{Subscription: sub, Type: typ, Body: raw, ResumeFrom: resumeFrom})
}

// PushError queues an ERROR event carrying a Kubernetes Status.
func (o *Outbox) PushError(sub string, status any) {
	o.pushControl(sub, protocol.Error, encode(status), "")
}

func encode(v any) []byte {
	raw, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own Status and bookmark types get here
	}
	return raw
}

// append queues it last, or first in line: a message the direct writer
// did not take goes before those queued while it tried.
func (o *Outbox) append(key itemKey, it *Item, first bool) {
	if o.byteLimit > 0 && o.bytes+it.ownBytes() > o.byteLimit {
		o.overflow = true
		o.signal()
		return
	}
	if !it.catchUp {
		if o.live >= o.limit {
			o.overflow = true
			o.signal()
			return
		}
		o.live++
	}
	o.bytes += it.ownBytes()
	var el *list.Element
	if first {
		el = o.items.PushFront(it)
	} else {
		el = o.items.PushBack(it)
	}
	switch {
	case o.index != nil:
		if key != (itemKey{}) {
			o.index[key] = el
		}
	case o.items.Len() > scanLimit:
		o.index = make(map[itemKey]*list.Element, o.items.Len())
		for e := o.items.Front(); e != nil; e = e.Next() {
			if k := e.Value.(*Item).key(); k != (itemKey{}) {
				o.index[k] = e
			}
		}
	}
	o.signal()
}

// Pop takes the oldest pending item. It returns nil when none is pending,
// or when the direct writer is writing one (Ready is signalled once it is
// done if more wait), and overflow true once the Outbox overflowed: the
// connection must then be closed with protocol.CloseResume.
func (o *Outbox) Pop() (it *Item, overflow bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.overflow {
		return nil, true
	}
	el := o.items.Front()
	if el == nil || o.inflight {
		return nil, false
	}
	o.remove(el)
	o.inflight = o.direct != nil
	return el.Value.(*Item), false
}

// Written tells an Outbox with a direct writer that the item last taken
// with Pop is out, so that the direct writer may write again.
func (o *Outbox) Written() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inflight = false
}

// Wake signals Ready, for a writer that has something of its own to finish
// (the rest of a message the direct writer could not send whole).
func (o *Outbox) Wake() { o.signal() }

// Len is the number of pending items.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.items.Len()
}

// DropSubscription removes the pending items of a subscription.
func (o *Outbox) DropSubscription(sub string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for el := o.items.Front(); el != nil; {
		next := el.Next()
		if el.Value.(*Item).Subscription == sub {
			o.remove(el)
		}
		el = next
	}
}

// Close drops everything pending and refuses further pushes.
func (o *Outbox) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.items.Init()
	o.index = nil
	o.live, o.bytes = 0, 0
	o.signal()
}
