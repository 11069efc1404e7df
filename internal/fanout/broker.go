package fanout

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"

	"github.com/nodemirror/nodemirror/internal/protocol"
)

// Subscription is one client subscription: what it wants and where it goes.
type Subscription struct {
	ID     string
	Filter Filter
	Out    *Outbox
}

// Broker holds the current objects of one kind, a bounded history of their
// changes, and the subscriptions to them. It is the store of the kind's one
// Reflector. All methods are safe for concurrent use.
//
// Changes are recorded under a lock and delivered to the subscriptions after
// it is released, as the API server's watch cache does: a change reaching a
// thousand outboxes holds up no Subscribe or List, and a Subscribe queuing a
// large initial state holds up no change. Each subscription still sees one
// ordered stream, since writers deliver in the order they record, and a new
// subscription holds back the changes that reach it until it has queued
// what it sees first.
type Broker struct {
	apiVersion, kind string
	clusterOf        ClusterOf

	// wmu serializes the writers (Add, Update, Delete, Replace, Bookmark)
	// from recording a change until it is delivered, so that changes reach
	// every subscription in the order of the history.
	wmu sync.Mutex

	mu      sync.Mutex
	objects map[string]map[string]*Object // namespace → name → object
	// byCluster indexes the same objects by namespace and cluster, so that
	// cluster-filtered lists and initial states read only their cluster.
	byCluster map[clusterKey]map[string]*Object
	count     int
	// history is a ring of the latest events; every event after
	// historyStart is in it.
	history      []event
	head, size   int
	historyStart uint64
	latest       uint64
	// advanced, when not nil, is closed (and dropped) the next time latest
	// moves: resumes from a point not reached yet wait on it.
	advanced chan struct{}
	// synced is closed once the first list is stored: until then the
	// broker holds no state it may hand out.
	synced chan struct{}
	// subs is replaced, never modified in place, so that a writer can
	// deliver to the set it read under mu after releasing it.
	subs []*subscriber
}

// subscriber is the broker's side of a Subscription.
type subscriber struct {
	*Subscription
	mu sync.Mutex
	// pending holds, in order, the events that reached the subscription
	// while it was queuing what it sees first.
	pending []event
	live    bool // what it sees first is queued: events go straight to Out
	gone    bool // unsubscribed: nothing more goes to Out
}

// ErrNotSynced is returned by Subscribe before the first list is stored.
var ErrNotSynced = errors.New("the hub has not been listed yet")

type clusterKey struct{ namespace, cluster string }

type event struct {
	typ string
	obj *Object // nil for a BOOKMARK
	pos uint64  // the stream position: the event's resourceVersion
	rv  string  // pos as the envelope carries it, formatted once
	// body is a BOOKMARK's encoded object.
	body []byte
}

func newEvent(typ string, obj *Object, pos uint64) event {
	return event{typ: typ, obj: obj, pos: pos, rv: strconv.FormatUint(pos, 10)}
}

var _ cache.ReflectorStore = &Broker{}

// ResumeWait is how long a subscription that resumes from a point past
// the broker's latest waits for the broker to get there. Such a point
// comes from another sidecar replica whose hub watch is ahead of this
// one's: the same hub's resourceVersions, a little later. After the wait
// the resume is answered from what the broker holds then: the missed
// events if it reached the point, a 410 and the current state otherwise.
var ResumeWait = 3 * time.Second

// NewBroker returns an empty broker for one kind that keeps the last
// historySize events for resuming clients.
func NewBroker(apiVersion, kind string, clusterOf ClusterOf, historySize int) *Broker {
	return &Broker{
		apiVersion: apiVersion, kind: kind, clusterOf: clusterOf,
		objects:   map[string]map[string]*Object{},
		byCluster: map[clusterKey]map[string]*Object{},
		history:   make([]event, max(historySize, 1)),
		synced:    make(chan struct{}),
	}
}

// HasSynced reports whether the first list has been stored.
func (b *Broker) HasSynced() bool {
	select {
	case <-b.synced:
		return true
	default:
		return false
	}
}

// Synced is closed once the first list has been stored.
func (b *Broker) Synced() <-chan struct{} { return b.synced }

// Add stores a new object (a watch ADDED event).
func (b *Broker) Add(obj any) error { return b.apply(protocol.Added, obj) }

// Update stores a changed object (a watch MODIFIED event).
func (b *Broker) Update(obj any) error { return b.apply(protocol.Modified, obj) }

// Delete removes an object (a watch DELETED event).
func (b *Broker) Delete(obj any) error { return b.apply(protocol.Deleted, obj) }

// Resync does nothing: the broker has nothing to re-deliver.
func (b *Broker) Resync() error { return nil }

// Bookmark advances the resume point while nothing changes, and passes it
// on so that idle clients keep a fresh resourceVersion.
func (b *Broker) Bookmark(resourceVersion string) error {
	rv, err := protocol.ParseResourceVersion(resourceVersion)
	if err != nil {
		return nil
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	if rv <= b.latest {
		b.mu.Unlock()
		return nil
	}
	b.latest = rv
	b.advance()
	subs := b.subs
	b.mu.Unlock()
	ev := b.bookmark(rv, false)
	for _, s := range subs {
		s.deliver(ev)
	}
	return nil
}

// Replace stores the result of a (re)list: clients see the difference to
// what they had as events, and the history restarts at the list's
// resourceVersion, since what happened before it is unknown.
func (b *Broker) Replace(items []any, resourceVersion string) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	fresh := make(map[string]map[string]*Object, len(b.objects))
	for _, item := range items {
		o, err := newObject(item.(*unstructured.Unstructured), b.clusterOf)
		if err != nil {
			return err
		}
		if fresh[o.Namespace] == nil {
			fresh[o.Namespace] = map[string]*Object{}
		}
		fresh[o.Namespace][o.Name] = o
	}
	rv, _ := protocol.ParseResourceVersion(resourceVersion)
	b.mu.Lock()
	b.latest = max(b.latest, rv)
	b.advance()
	var evs []event
	for ns, objs := range b.objects {
		for name, old := range objs {
			if fresh[ns][name] == nil {
				evs = append(evs, newEvent(protocol.Deleted, old, b.latest))
			}
		}
	}
	b.count = 0
	for ns, objs := range fresh {
		for name, o := range objs {
			b.count++
			switch old := b.objects[ns][name]; {
			case old == nil:
				evs = append(evs, newEvent(protocol.Added, o, b.latest))
			case old.ResourceVersion != o.ResourceVersion:
				evs = append(evs, newEvent(protocol.Modified, o, b.latest))
			}
		}
	}
	b.objects = fresh
	clear(b.byCluster)
	for _, objs := range fresh {
		for _, o := range objs {
			b.index(o)
		}
	}
	b.head, b.size = 0, 0
	b.historyStart = b.latest
	if !b.HasSynced() {
		close(b.synced)
	}
	subs := b.subs
	b.mu.Unlock()
	for _, s := range subs {
		s.deliver(evs...)
	}
	return nil
}

func (b *Broker) apply(typ string, item any) error {
	u, ok := item.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected %T in %s store", item, b.kind)
	}
	o, err := newObject(u, b.clusterOf)
	if err != nil {
		return err
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.mu.Lock()
	b.latest = max(b.latest, o.rv)
	b.advance()
	ev := newEvent(typ, o, b.latest)
	ns := b.objects[o.Namespace]
	if old := ns[o.Name]; old != nil {
		b.unindex(old)
		b.count--
	}
	if typ == protocol.Deleted {
		delete(ns, o.Name)
	} else {
		if ns == nil {
			ns = map[string]*Object{}
			b.objects[o.Namespace] = ns
		}
		ns[o.Name] = o
		b.index(o)
		b.count++
	}
	b.record(ev)
	subs := b.subs
	b.mu.Unlock()
	for _, s := range subs {
		s.deliver(ev)
	}
	return nil
}

func (b *Broker) index(o *Object) {
	k := clusterKey{o.Namespace, o.Cluster}
	if b.byCluster[k] == nil {
		b.byCluster[k] = map[string]*Object{}
	}
	b.byCluster[k][o.Name] = o
}

func (b *Broker) unindex(o *Object) {
	k := clusterKey{o.Namespace, o.Cluster}
	delete(b.byCluster[k], o.Name)
	if len(b.byCluster[k]) == 0 {
		delete(b.byCluster, k)
	}
}

func (b *Broker) record(ev event) {
	if b.size == len(b.history) {
		b.historyStart = b.history[b.head].pos
		b.head = (b.head + 1) % len(b.history)
		b.size--
	}
	b.history[(b.head+b.size)%len(b.history)] = ev
	b.size++
}

// deliver queues events that pass the subscription's filter (a BOOKMARK
// always does), or holds them back while the subscription is still queuing
// what it sees first.
func (s *subscriber) deliver(evs ...event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		switch {
		case s.gone || ev.obj != nil && !s.Filter.Match(ev.obj):
		case !s.live:
			s.pending = append(s.pending, ev)
		default:
			s.send(ev, false)
		}
	}
}

func (s *subscriber) send(ev event, catchUp bool) {
	if ev.obj == nil {
		s.Out.pushControl(s.ID, ev.typ, ev.body, ev.rv)
		return
	}
	s.Out.push(s.ID, ev.typ, ev.obj, ev.rv, catchUp)
}

// bookmark is a BOOKMARK event at pos, its object as the API server sends it.
func (b *Broker) bookmark(pos uint64, initialEnd bool) event {
	ev := newEvent(protocol.Bookmark, nil, pos)
	m := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: b.apiVersion, Kind: b.kind},
		ObjectMeta: metav1.ObjectMeta{ResourceVersion: ev.rv},
	}
	if initialEnd {
		m.Annotations = map[string]string{protocol.InitialEventsEndAnnotation: "true"}
	}
	ev.body = encode(m)
	return ev
}

// Subscribe registers s and queues what it must see first: with resumeFrom
// set and still covered by the history, the events it missed; otherwise
// (and after a 410 ERROR if it asked to resume) the current state as ADDED
// events. Either way a BOOKMARK marked initial-events-end follows, and
// changes after it. Before the first list it registers nothing and returns
// ErrNotSynced: an empty store is not an empty namespace.
func (b *Broker) Subscribe(s *Subscription, resumeFrom string) error {
	if rv, err := protocol.ParseResourceVersion(resumeFrom); resumeFrom != "" && err == nil {
		b.waitFor(rv, ResumeWait)
	}
	sub := &subscriber{Subscription: s}
	var (
		missed  []event   // the events to resume with, or
		state   []*Object // the current state
		expired *metav1.Status
	)
	// Under the lock only what the subscription starts from is taken, and
	// it is registered at the same point of the stream: it gets every later
	// event and none before.
	b.mu.Lock()
	if !b.HasSynced() {
		b.mu.Unlock()
		return ErrNotSynced
	}
	rv, err := protocol.ParseResourceVersion(resumeFrom)
	if resumeFrom != "" && err == nil && rv >= b.historyStart && rv <= b.latest {
		missed = b.since(rv, s.Filter)
	} else {
		if resumeFrom != "" {
			expired = protocol.NewStatus(http.StatusGone, metav1.StatusReasonExpired, fmt.Sprintf(
				"resourceVersion %s is not in the sidecar's history (it holds %d to %d): start over from the state that follows",
				resumeFrom, b.historyStart, b.latest))
		}
		state = b.collect(s.Filter)
	}
	start := b.latest
	b.subs = append(slices.Clip(b.subs), sub)
	b.mu.Unlock()

	// Changes that come while this is queued wait in sub.pending.
	if expired != nil {
		s.Out.PushError(s.ID, expired)
	}
	for _, ev := range missed {
		sub.send(ev, true)
	}
	sortObjects(state)
	for _, o := range state {
		s.Out.push(s.ID, protocol.Added, o, "", true)
	}
	sub.send(b.bookmark(start, true), false)

	// A writer delivering meanwhile waits for sub.mu: its events follow
	// the pending ones.
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if sub.gone { // unsubscribed meanwhile: take back what was queued
		s.Out.DropSubscription(s.ID)
		return nil
	}
	for _, ev := range sub.pending {
		sub.send(ev, false)
	}
	sub.pending, sub.live = nil, true
	return nil
}

// advance wakes the resumes waiting for latest to move; call it with mu
// held.
func (b *Broker) advance() {
	if b.advanced != nil {
		close(b.advanced)
		b.advanced = nil
	}
}

// waitFor waits until the broker has reached rv, or for at most d.
func (b *Broker) waitFor(rv uint64, d time.Duration) {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		b.mu.Lock()
		if !b.HasSynced() || b.latest >= rv {
			b.mu.Unlock()
			return
		}
		if b.advanced == nil {
			b.advanced = make(chan struct{})
		}
		moved := b.advanced
		b.mu.Unlock()
		select {
		case <-moved:
		case <-timeout.C:
			return
		}
	}
}

// since returns the events after rv that pass f, oldest first.
func (b *Broker) since(rv uint64, f Filter) []event {
	var evs []event
	for i := range b.size {
		ev := b.history[(b.head+i)%len(b.history)]
		if ev.pos > rv && f.Match(ev.obj) {
			evs = append(evs, ev)
		}
	}
	return evs
}

// Unsubscribe removes s and drops its pending items: once it has returned
// (and s's Subscribe too), nothing more of s reaches its Outbox.
func (b *Broker) Unsubscribe(s *Subscription) {
	b.mu.Lock()
	i := slices.IndexFunc(b.subs, func(sub *subscriber) bool { return sub.Subscription == s })
	var sub *subscriber
	if i >= 0 {
		sub = b.subs[i]
		b.subs = slices.Delete(slices.Clone(b.subs), i, i+1)
	}
	b.mu.Unlock()
	if sub != nil {
		// A writer may still hold the set that had s: once gone is set,
		// it delivers nothing more.
		sub.mu.Lock()
		sub.gone, sub.pending = true, nil
		sub.mu.Unlock()
	}
	s.Out.DropSubscription(s.ID)
}

// List returns the objects passing f, sorted by namespace and name, and the
// resourceVersion they are current at; ErrNotSynced before the first list.
func (b *Broker) List(f Filter) ([]*Object, string, error) {
	b.mu.Lock()
	if !b.HasSynced() {
		b.mu.Unlock()
		return nil, "", ErrNotSynced
	}
	objs, rv := b.collect(f), b.latest
	b.mu.Unlock()
	sortObjects(objs)
	return objs, strconv.FormatUint(rv, 10), nil
}

// collect returns the objects passing f, unsorted: sorting them waits until
// the lock is released.
func (b *Broker) collect(f Filter) []*Object {
	var out []*Object
	add := func(objs map[string]*Object) {
		for _, o := range objs {
			if f.Match(o) {
				out = append(out, o)
			}
		}
	}
	switch {
	case f.Namespace != "" && len(f.Clusters) > 0:
		for c := range f.Clusters {
			add(b.byCluster[clusterKey{f.Namespace, c}])
		}
	case f.Namespace != "":
		add(b.objects[f.Namespace])
	default:
		out = make([]*Object, 0, b.count)
		for _, objs := range b.objects {
			add(objs)
		}
	}
	return out
}

func sortObjects(objs []*Object) {
	slices.SortFunc(objs, func(a, b *Object) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// Len is the number of objects held.
func (b *Broker) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}
