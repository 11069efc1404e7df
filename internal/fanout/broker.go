package fanout

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

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
type Broker struct {
	apiVersion, kind string
	clusterOf        ClusterOf

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
	// synced is closed once the first list is stored: until then the
	// broker holds no state it may hand out.
	synced chan struct{}
	subs   map[*Subscription]struct{}
}

// ErrNotSynced is returned by Subscribe before the first list is stored.
var ErrNotSynced = errors.New("the hub has not been listed yet")

type clusterKey struct{ namespace, cluster string }

type event struct {
	typ string
	obj *Object
	pos uint64 // the stream position: the event's resourceVersion
}

var _ cache.ReflectorStore = &Broker{}

// NewBroker returns an empty broker for one kind that keeps the last
// historySize events for resuming clients.
func NewBroker(apiVersion, kind string, clusterOf ClusterOf, historySize int) *Broker {
	return &Broker{
		apiVersion: apiVersion, kind: kind, clusterOf: clusterOf,
		objects:   map[string]map[string]*Object{},
		byCluster: map[clusterKey]map[string]*Object{},
		history:   make([]event, max(historySize, 1)),
		synced:    make(chan struct{}),
		subs:      map[*Subscription]struct{}{},
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
	b.mu.Lock()
	defer b.mu.Unlock()
	if rv <= b.latest {
		return nil
	}
	b.latest = rv
	for s := range b.subs {
		s.Out.pushControl(s.ID, protocol.Bookmark, b.bookmark(false), b.latestString())
	}
	return nil
}

// Replace stores the result of a (re)list: clients see the difference to
// what they had as events, and the history restarts at the list's
// resourceVersion, since what happened before it is unknown.
func (b *Broker) Replace(items []any, resourceVersion string) error {
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
	defer b.mu.Unlock()
	b.latest = max(b.latest, rv)
	for ns, objs := range b.objects {
		for name, old := range objs {
			if fresh[ns][name] == nil {
				b.publish(event{protocol.Deleted, old, b.latest})
			}
		}
	}
	b.count = 0
	for ns, objs := range fresh {
		for name, o := range objs {
			b.count++
			switch old := b.objects[ns][name]; {
			case old == nil:
				b.publish(event{protocol.Added, o, b.latest})
			case old.ResourceVersion != o.ResourceVersion:
				b.publish(event{protocol.Modified, o, b.latest})
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
	b.mu.Lock()
	defer b.mu.Unlock()
	b.latest = max(b.latest, o.rv)
	ev := event{typ, o, b.latest}
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
	b.publish(ev)
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

func (b *Broker) publish(ev event) {
	rv := strconv.FormatUint(ev.pos, 10)
	for s := range b.subs {
		if s.Filter.Match(ev.obj) {
			s.Out.push(s.ID, ev.typ, ev.obj, rv, false)
		}
	}
}

func (b *Broker) latestString() string { return strconv.FormatUint(b.latest, 10) }

// bookmark is the object of a BOOKMARK event, as the API server sends it.
func (b *Broker) bookmark(initialEnd bool) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: b.apiVersion, Kind: b.kind},
		ObjectMeta: metav1.ObjectMeta{ResourceVersion: b.latestString()},
	}
	if initialEnd {
		m.Annotations = map[string]string{protocol.InitialEventsEndAnnotation: "true"}
	}
	return m
}

// Subscribe registers s and queues what it must see first: with resumeFrom
// set and still covered by the history, the events it missed; otherwise
// (and after a 410 ERROR if it asked to resume) the current state as ADDED
// events. Either way a BOOKMARK marked initial-events-end follows, and
// changes after it. Before the first list it registers nothing and returns
// ErrNotSynced: an empty store is not an empty namespace.
func (b *Broker) Subscribe(s *Subscription, resumeFrom string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.HasSynced() {
		return ErrNotSynced
	}
	b.subs[s] = struct{}{}
	if resumeFrom != "" {
		rv, err := protocol.ParseResourceVersion(resumeFrom)
		if err == nil && rv >= b.historyStart && rv <= b.latest {
			for i := range b.size {
				ev := b.history[(b.head+i)%len(b.history)]
				if ev.pos > rv && s.Filter.Match(ev.obj) {
					s.Out.push(s.ID, ev.typ, ev.obj, strconv.FormatUint(ev.pos, 10), true)
				}
			}
			s.Out.pushControl(s.ID, protocol.Bookmark, b.bookmark(true), b.latestString())
			return nil
		}
		s.Out.PushError(s.ID, protocol.NewStatus(http.StatusGone, metav1.StatusReasonExpired, fmt.Sprintf(
			"resourceVersion %s is not in the sidecar's history (it holds %d to %d): start over from the state that follows",
			resumeFrom, b.historyStart, b.latest)))
	}
	for _, o := range b.listLocked(s.Filter) {
		s.Out.push(s.ID, protocol.Added, o, "", true)
	}
	s.Out.pushControl(s.ID, protocol.Bookmark, b.bookmark(true), b.latestString())
	return nil
}

// Unsubscribe removes s; its pending items are dropped.
func (b *Broker) Unsubscribe(s *Subscription) {
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
	s.Out.DropSubscription(s.ID)
}

// List returns the objects passing f, sorted by namespace and name, and the
// resourceVersion they are current at; ErrNotSynced before the first list.
func (b *Broker) List(f Filter) ([]*Object, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.HasSynced() {
		return nil, "", ErrNotSynced
	}
	return b.listLocked(f), b.latestString(), nil
}

func (b *Broker) listLocked(f Filter) []*Object {
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
	slices.SortFunc(out, func(a, b *Object) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Len is the number of objects held.
func (b *Broker) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}
