package fanout

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nodemirror/nodemirror/internal/protocol"
)

// A Subscribe queuing a large initial state holds up no change: an Add made
// while it is halfway through reaches another subscription at once, and
// the copying one right after its initial-events-end BOOKMARK.
func TestBrokerPublishesWhileASubscriptionCopies(t *testing.T) {
	const n = 1000
	b := newTestBroker(10)
	var items []any
	for i := range n {
		items = append(items, snap("x", "c", fmt.Sprintf("n%04d", i), fmt.Sprint(i+1)))
	}
	_ = b.Replace(items, "2000")
	other := NewOutbox(100, 0, nil)
	_ = b.Subscribe(&Subscription{ID: "other", Filter: NewFilter("x", nil), Out: other}, "")
	drain(t, other)

	// An item pending for c.n0500 makes the copy conflate when it gets
	// there, and onConflate is then a hook halfway through the copy.
	var hooked atomic.Bool
	slow := NewOutbox(100, 0, func() {
		if hooked.Swap(true) {
			return
		}
		done := make(chan struct{})
		go func() {
			_ = b.Add(snap("x", "c", "new", "2001"))
			close(done)
		}()
		// This runs under slow's lock: the Add may wait neither for the
		// broker nor for the copying subscription's Outbox.
		select {
		case <-done:
		case <-time.After(10 * time.Second): // only a deadlock gets here
			t.Error("an Add waited for a Subscribe to queue its initial state")
			return
		}
		if got := drain(t, other); strings.Join(got, ",") != "ADDED c.new@2001" {
			t.Errorf("while another subscription copied, the other one got %v", got)
		}
	})
	slow.push("slow", protocol.Modified, &Object{Namespace: "x", Name: "c.n0500", Raw: []byte("{}")}, "1", false)
	if err := b.Subscribe(&Subscription{ID: "slow", Filter: NewFilter("x", nil), Out: slow}, ""); err != nil {
		t.Fatal(err)
	}
	if !hooked.Load() {
		t.Fatal("the copy never reached the hook")
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("ADDED c.n%04d@", i))
	}
	want = append(want, "BOOKMARK @2000", "ADDED c.new@2001")
	if got := drain(t, slow); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("the copying subscription got %d items, ending %v; want %d ending %v", len(got), got[max(0, len(got)-3):], len(want), want[len(want)-3:])
	}
}

// Subscriptions made while changes stream in (fresh ones, and some
// resuming from a recent or an expired point, across a relist) each end up
// with exactly the broker's final state, through a stream in order: what
// they start with, the initial-events-end BOOKMARK, then each later change
// once, with growing resourceVersions. Run it with -race.
func TestBrokerSubscribesDuringChanges(t *testing.T) {
	const changes, subscribers = 4000, 40
	type key struct{ ns, cluster, node string }
	var keys []key
	for _, ns := range []string{"x", "y"} {
		for _, c := range []string{"c1", "c2"} {
			for i := range 100 {
				keys = append(keys, key{ns, c, fmt.Sprintf("n%03d", i)})
			}
		}
	}
	filters := []Filter{NewFilter("", nil), NewFilter("x", nil), NewFilter("y", []string{"c2"})}
	rng := rand.New(rand.NewPCG(1, 2))
	b := newTestBroker(300)

	// The model: every object's resourceVersion, and the stream position.
	model := map[key]uint64{}
	var pos uint64
	items := func() []any {
		var out []any
		for k, rv := range model {
			out = append(out, snap(k.ns, k.cluster, k.node, fmt.Sprint(rv)))
		}
		return out
	}
	relist := func() {
		for _, k := range keys {
			switch _, ok := model[k]; {
			case rng.IntN(4) == 0:
				delete(model, k)
			case ok && rng.IntN(2) == 0: // unchanged
			default:
				pos++
				model[k] = pos
			}
		}
		pos++
		if err := b.Replace(items(), fmt.Sprint(pos)); err != nil {
			t.Fatal(err)
		}
	}
	change := func(i int) {
		pos++
		k := keys[rng.IntN(len(keys))]
		u := snap(k.ns, k.cluster, k.node, fmt.Sprint(pos))
		_, ok := model[k]
		switch {
		case i == changes/2:
			pos--
			relist()
		case i%500 == 0:
			_ = b.Bookmark(fmt.Sprint(pos))
		case !ok:
			model[k] = pos
			_ = b.Add(u)
		case rng.IntN(3) == 0:
			delete(model, k)
			_ = b.Delete(u)
		default:
			model[k] = pos
			_ = b.Update(u)
		}
	}

	// Each subscriber starts after a change of its own, half of them
	// resuming from a point up to 600 changes before (the history holds
	// 300), with the state at that point.
	type plan struct {
		from  uint64 // 0: a fresh subscription
		state map[key]uint64
	}
	plans := map[int][]*plan{}
	resumes := map[int][]*plan{}
	for i := range subscribers {
		p := &plan{}
		after := 1 + rng.IntN(changes-1)
		plans[after] = append(plans[after], p)
		if i%2 == 0 {
			from := max(0, after-rng.IntN(600))
			resumes[from] = append(resumes[from], p)
		}
	}
	var final map[key]uint64
	finished := make(chan struct{})
	var wg sync.WaitGroup
	var resumed, expired atomic.Int32
	subscribe := func(id int, p *plan) {
		defer wg.Done()
		f := filters[id%len(filters)]
		c := &streamCheck{t: t, id: fmt.Sprint(id), filter: f, from: p.from, held: map[string]string{}}
		for k, rv := range p.state {
			if o := (&Object{Namespace: k.ns, Cluster: k.cluster}); f.Match(o) {
				c.held[k.ns+"/"+k.cluster+"."+k.node] = fmt.Sprint(rv)
			}
		}
		out := NewOutbox(1<<30, 0, nil)
		stop, read := make(chan struct{}), make(chan struct{})
		go func() { // reads while the subscription starts and changes come
			defer close(read)
			for {
				select {
				case <-out.Ready():
					c.drain(out)
				case <-stop:
					c.drain(out)
					return
				}
			}
		}()
		resumeFrom := ""
		if p.from > 0 {
			resumeFrom = fmt.Sprint(p.from)
		}
		if err := b.Subscribe(&Subscription{ID: c.id, Filter: f, Out: out}, resumeFrom); err != nil {
			t.Error(err)
		}
		<-finished
		close(stop)
		<-read
		want := map[string]string{}
		for k, rv := range final {
			if o := (&Object{Namespace: k.ns, Cluster: k.cluster}); f.Match(o) {
				want[k.ns+"/"+k.cluster+"."+k.node] = fmt.Sprint(rv)
			}
		}
		if !c.started {
			t.Errorf("subscription %s: no initial-events-end BOOKMARK", c.id)
		}
		if !maps.Equal(c.held, want) {
			t.Errorf("subscription %s (%+v, from %d) holds %d objects, the broker %d", c.id, f, p.from, len(c.held), len(want))
		}
		switch {
		case c.expired:
			expired.Add(1)
		case p.from > 0:
			resumed.Add(1)
		}
	}

	for i := range 60 { // an initial list of 60 objects
		model[keys[i*len(keys)/60]] = uint64(i + 1)
	}
	pos = 100
	_ = b.Replace(items(), fmt.Sprint(pos))
	id := 0
	for i := range changes + 1 {
		if i > 0 {
			change(i)
		}
		for _, p := range resumes[i] {
			p.from, p.state = pos, maps.Clone(model)
		}
		for _, p := range plans[i] {
			wg.Add(1)
			go subscribe(id, p)
			id++
		}
	}
	final = model
	close(finished)
	wg.Wait()
	if objs, _, _ := b.List(Filter{}); len(objs) != len(model) {
		t.Errorf("the broker lists %d objects, the model has %d", len(objs), len(model))
	}
	t.Logf("%d subscriptions resumed, %d found their point expired", resumed.Load(), expired.Load())
	if resumed.Load() == 0 || expired.Load() == 0 {
		t.Errorf("%d subscriptions resumed and %d found their point expired: the test needs both", resumed.Load(), expired.Load())
	}
}

// streamCheck follows one subscription's stream as a client would and
// reports what breaks its order.
type streamCheck struct {
	t      *testing.T
	id     string
	filter Filter
	from   uint64            // the resume point; 0 for a fresh state
	held   map[string]string // namespace/name → resourceVersion
	seen   int
	// started is set by the initial-events-end BOOKMARK at position start;
	// last is the position of the latest event.
	started     bool
	start, last uint64
	expired     bool // got a 410
	failed      bool
}

func (c *streamCheck) drain(o *Outbox) {
	for {
		it, overflow := o.Pop()
		if overflow {
			c.t.Errorf("subscription %s overflowed", c.id)
		}
		if it == nil {
			return
		}
		c.item(it)
	}
}

func (c *streamCheck) item(it *Item) {
	c.seen++
	var pos uint64
	if it.ResumeFrom != "" {
		pos, _ = protocol.ParseResourceVersion(it.ResumeFrom)
	}
	fail := func(format string, args ...any) {
		if !c.failed { // what follows the first error says little more
			c.t.Errorf("subscription %s, item %d (%s %s): %s", c.id, c.seen, it.Type, it.ResumeFrom, fmt.Sprintf(format, args...))
		}
		c.failed = true
	}
	switch it.Type {
	case protocol.Error:
		if c.seen != 1 || c.from == 0 || !bytes.Contains(it.Body, []byte(`"code":410`)) {
			fail("only a resume may start with an ERROR, a 410: %s", it.Body)
		}
		c.from, c.held, c.expired = 0, map[string]string{}, true // start over
		return
	case protocol.Bookmark:
		initialEnd := bytes.Contains(it.Body, []byte(protocol.InitialEventsEndAnnotation))
		if initialEnd == c.started {
			fail("initial-events-end is %v after started is %v", initialEnd, c.started)
		}
		if pos < c.last {
			fail("position %d after %d", pos, c.last)
		}
		if initialEnd {
			for k, rv := range c.held {
				if n, _ := protocol.ParseResourceVersion(rv); n > pos {
					fail("the initial state has %s at %s, after its BOOKMARK", k, rv)
				}
			}
			c.started, c.start = true, pos
		}
		c.last = pos
		return
	}
	switch {
	case !c.filter.Match(it.Object):
		fail("%s/%s does not pass the filter", it.Object.Namespace, it.Object.Name)
	case !c.started && c.from == 0 && it.ResumeFrom != "":
		fail("an initial state carries no resourceVersion")
	case !c.started && c.from > 0 && pos <= c.from:
		fail("resuming from %d", c.from)
	case c.started && pos <= c.start:
		fail("a change at or before the initial state's %d", c.start)
	case pos < c.last:
		fail("position %d after %d", pos, c.last)
	}
	c.last = max(c.last, pos)
	k := it.Object.Namespace + "/" + it.Object.Name
	rv, ok := c.held[k]
	switch it.Type {
	case protocol.Added:
		if ok {
			fail("ADDED %s, held at %s", k, rv)
		}
	case protocol.Modified:
		if !ok || rv == it.Object.ResourceVersion {
			fail("MODIFIED %s to %s, held: %v at %s", k, it.Object.ResourceVersion, ok, rv)
		}
	case protocol.Deleted:
		if !ok {
			fail("DELETED %s, not held", k)
		}
		delete(c.held, k)
		return
	}
	c.held[k] = it.Object.ResourceVersion
}

// Once Unsubscribe has returned, nothing of the subscription is pending or
// reaches its Outbox, although changes are being delivered meanwhile.
func TestBrokerUnsubscribeDuringChanges(t *testing.T) {
	b := newTestBroker(100)
	_ = b.Replace([]any{snap("x", "c", "a", "1")}, "1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			_ = b.Update(snap("x", "c", "a", fmt.Sprint(i+2)))
		}
	}()
	var outs []*Outbox
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		out := NewOutbox(1<<20, 0, nil)
		s := &Subscription{ID: "s", Filter: NewFilter("x", nil), Out: out}
		_ = b.Subscribe(s, "")
		runtime.Gosched()
		b.Unsubscribe(s)
		if n := out.Len(); n != 0 {
			t.Fatalf("%d items pending after Unsubscribe", n)
		}
		outs = append(outs, out)
	}
	for i, out := range outs {
		if n := out.Len(); n != 0 {
			t.Errorf("subscription %d of %d: %d items arrived after Unsubscribe", i, len(outs), n)
		}
	}
}

// BenchmarkUpdateWhileSubscribing times changes that reach 100
// subscriptions while new subscriptions keep copying a 10,000-object state
// of another namespace, and counts those.
func BenchmarkUpdateWhileSubscribing(b *testing.B) {
	br := newTestBroker(1000)
	var items []any
	for i := range 10000 {
		items = append(items, snap("big", "c", fmt.Sprintf("n%05d", i), "1"))
	}
	for i := range 100 {
		items = append(items, snap("x", "c", fmt.Sprintf("n%03d", i), "1"))
	}
	_ = br.Replace(items, "1")
	for i := range 100 {
		_ = br.Subscribe(&Subscription{ID: fmt.Sprint(i), Filter: NewFilter("x", nil), Out: NewOutbox(1<<30, 0, nil)}, "")
	}
	var subscribes atomic.Int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := &Subscription{ID: "new", Filter: NewFilter("big", nil), Out: NewOutbox(1, 0, nil)}
			_ = br.Subscribe(s, "")
			br.Unsubscribe(s)
			subscribes.Add(1)
		}
	}()
	b.ResetTimer()
	subscribes.Store(0)
	for i := range b.N {
		_ = br.Update(snap("x", "c", fmt.Sprintf("n%03d", i%100), fmt.Sprint(i+2)))
	}
	b.StopTimer()
	b.ReportMetric(float64(subscribes.Load())/b.Elapsed().Seconds(), "subscribes/s")
	close(stop)
	<-stopped
}
