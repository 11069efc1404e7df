package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
)

const (
	// MemberLabel marks the Leases of shard members; its value is "true".
	MemberLabel = "fleet.nodemirror.io/shard-member"
	// HeldAnnotation of a member's Lease lists, as JSON, the keys the
	// member holds or claims, by kind: {"ManagedCluster":["ns/name"]}.
	HeldAnnotation = "fleet.nodemirror.io/shard-held"
	// LeasePrefix starts the name of every member's Lease.
	LeasePrefix = "nodemirror-shard-"
)

// Config says who this replica is and how fast membership moves.
type Config struct {
	// Leases reads and writes Leases in Namespace.
	Leases    coordinationclient.LeasesGetter
	Namespace string
	// Identity names this replica (its pod name): unique among the
	// replicas, and a valid Lease name after LeasePrefix.
	Identity string
	// LeaseDuration is how long other replicas wait after a Lease last
	// moved before they take its keys (whole seconds: a Lease stores
	// seconds).
	LeaseDuration time.Duration
	// RenewDeadline is how long after its last successful renewal this
	// replica stops all of its keys. Less than LeaseDuration: the gap is
	// what stopping may take.
	RenewDeadline time.Duration
	// RetryPeriod is how often the Lease is renewed and the members
	// looked at again.
	RetryPeriod time.Duration
	Log         logr.Logger
}

// Validate says what is wrong with c's settings, if anything; the Lease
// client is New's to check.
func (c Config) Validate() error {
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("the namespace of the shard Leases is empty"))
	}
	if c.Identity == "" {
		errs = append(errs, errors.New("the replica identity is empty"))
	} else if msgs := validation.IsDNS1123Subdomain(LeasePrefix + c.Identity); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("replica identity %q does not make a Lease name: %v", c.Identity, msgs))
	}
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 {
		errs = append(errs, fmt.Errorf("lease duration %v: want whole seconds, at least 1s", c.LeaseDuration))
	}
	if c.RenewDeadline <= 0 || c.RenewDeadline >= c.LeaseDuration {
		errs = append(errs, fmt.Errorf("renew deadline %v: want more than 0 and less than the lease duration %v", c.RenewDeadline, c.LeaseDuration))
	}
	if c.RetryPeriod <= 0 || c.RetryPeriod >= c.RenewDeadline {
		errs = append(errs, fmt.Errorf("retry period %v: want more than 0 and less than the renew deadline %v", c.RetryPeriod, c.RenewDeadline))
	}
	return errors.Join(errs...)
}

// Keyspace is one kind of keyed work the members share.
type Keyspace struct {
	// Kind names the keyspace in the Leases (e.g. ManagedCluster).
	Kind string
	// List returns every key that exists now (e.g. "namespace/name"),
	// typically from an informer cache. An error skips the keyspace for
	// one round: nothing is claimed or released on it.
	List func(ctx context.Context) ([]string, error)
	// Release stops all work on key and returns when it has stopped: the
	// key is published as released only after. It runs with the key's
	// Hold lock held, so no Hold of the key runs meanwhile.
	Release func(key string)
	// Acquired is told, without waiting for it, that this replica now
	// owns key, e.g. to queue it for a reconcile.
	Acquired func(key string)
}

type ref struct{ kind, key string }

// observed is what this replica knows of another member's Lease.
type observed struct {
	resourceVersion string
	// seen is when this replica last saw the Lease change (monotonic).
	seen     time.Time
	duration time.Duration
	held     map[ref]bool
}

// Membership runs this replica's membership: it renews the Lease,
// watches the others and claims and releases keys. It is a
// controller-runtime Runnable that runs on every replica.
type Membership struct {
	cfg    Config
	spaces []Keyspace

	mu sync.Mutex
	// owned keys run here; pending keys are claimed in the Lease but not
	// started; releasing keys are being stopped and stay published.
	owned, pending, releasing map[ref]bool
	locks                     map[ref]*sync.Mutex
	others                    map[string]*observed
	members                   int
	renewed                   time.Time // when the last successful renewal was sent
	lease                     *coordinationv1.Lease
	now                       func() time.Time
}

// New returns the membership of cfg.Identity; add keyspaces before Start.
func New(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Leases == nil {
		return nil, errors.New("no Lease client")
	}
	return &Membership{
		cfg: cfg, owned: map[ref]bool{}, pending: map[ref]bool{}, releasing: map[ref]bool{},
		locks: map[ref]*sync.Mutex{}, others: map[string]*observed{}, now: time.Now,
	}, nil
}

// AddKeyspace adds a kind of work; call it before Start.
func (m *Membership) AddKeyspace(ks Keyspace) { m.spaces = append(m.spaces, ks) }

// Identity is this replica's identity.
func (m *Membership) Identity() string { return m.cfg.Identity }

// NeedLeaderElection is false: every replica is a member.
func (m *Membership) NeedLeaderElection() bool { return false }

// Hold locks key and says whether this replica owns it. Until unlock is
// called the key is not released, so that work started or written under
// the Hold is stopped by Release. Callers must not block for long inside.
func (m *Membership) Hold(kind, key string) (owned bool, unlock func()) {
	r := ref{kind, key}
	l := m.lock(r)
	l.Lock()
	m.mu.Lock()
	owned = m.owned[r]
	m.mu.Unlock()
	return owned, l.Unlock
}

// Owns says whether this replica owns key now, without locking it.
func (m *Membership) Owns(kind, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owned[ref{kind, key}]
}

// Owned is the number of keys of kind this replica owns.
func (m *Membership) Owned(kind string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for r := range m.owned {
		if r.kind == kind {
			n++
		}
	}
	return n
}

// Healthy fails while this replica's Lease is not renewed within its
// renew deadline: a readiness check.
func (m *Membership) Healthy() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.renewed.IsZero() {
		return errors.New("shard Lease not written yet")
	}
	if d := m.now().Sub(m.renewed); d > m.cfg.RenewDeadline {
		return fmt.Errorf("shard Lease not renewed for %v", d.Round(time.Millisecond))
	}
	return nil
}

func (m *Membership) lock(r ref) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.locks[r]
	if !ok {
		l = &sync.Mutex{}
		m.locks[r] = l
	}
	return l
}

func (m *Membership) leaseName() string { return LeasePrefix + m.cfg.Identity }

func (m *Membership) log() logr.Logger {
	return m.cfg.Log.WithValues("replica", m.cfg.Identity, "lease", m.cfg.Namespace+"/"+m.leaseName())
}

// Start runs the membership until ctx ends; then it stops every key it
// owns and deletes its Lease, so that the others take over at once.
func (m *Membership) Start(ctx context.Context) error {
	log := m.log()
	log.Info("Joining the shard members", "leaseDuration", m.cfg.LeaseDuration, "renewDeadline", m.cfg.RenewDeadline, "retryPeriod", m.cfg.RetryPeriod)
	watchdogDone := make(chan struct{})
	go func() {
		defer close(watchdogDone)
		m.watchdog(ctx)
	}()
	for {
		m.tick(ctx)
		// Jitter, so that replicas started together do not claim in step.
		wait := m.cfg.RetryPeriod - time.Duration(rand.Int64N(int64(m.cfg.RetryPeriod)/5+1))
		select {
		case <-ctx.Done():
			<-watchdogDone
			m.releaseAll("shutting down")
			dctx, cancel := context.WithTimeout(context.Background(), m.cfg.RenewDeadline)
			defer cancel()
			err := m.cfg.Leases.Leases(m.cfg.Namespace).Delete(dctx, m.leaseName(), metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				log.Error(err, "Cannot delete the shard Lease; the others take over when it expires")
			} else {
				log.Info("Left the shard members")
			}
			return nil
		case <-time.After(wait):
		}
	}
}

// watchdog stops every key once the Lease has not been renewed within the
// renew deadline, whatever the renewal loop is stuck on.
func (m *Membership) watchdog(ctx context.Context) {
	step := min(m.cfg.RetryPeriod/4, 100*time.Millisecond)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(step):
		}
		m.mu.Lock()
		late := !m.renewed.IsZero() && m.now().Sub(m.renewed) > m.cfg.RenewDeadline && len(m.owned) > 0
		m.mu.Unlock()
		if late {
			fencedTotal.Inc()
			m.releaseAll("the shard Lease was not renewed within the renew deadline")
		}
	}
}

// releaseAll stops every key owned and forgets every claim.
func (m *Membership) releaseAll(why string) {
	m.mu.Lock()
	var all []ref
	for r := range m.owned {
		all = append(all, r)
	}
	clear(m.pending)
	m.mu.Unlock()
	if len(all) > 0 {
		m.log().Info("Stopping every key this replica owns", "reason", why, "keys", len(all))
	}
	m.release(all)
}

// release stops the keys: they stop counting as owned at once, stay
// published until their Release has returned, and are then dropped.
func (m *Membership) release(rs []ref) {
	var wg sync.WaitGroup
	for _, r := range rs {
		m.mu.Lock()
		if !m.owned[r] {
			m.mu.Unlock()
			continue
		}
		delete(m.owned, r)
		m.releasing[r] = true
		m.mu.Unlock()
		wg.Go(func() {
			l := m.lock(r)
			l.Lock()
			if ks := m.space(r.kind); ks != nil && ks.Release != nil {
				ks.Release(r.key)
			}
			l.Unlock()
			m.mu.Lock()
			delete(m.releasing, r)
			m.mu.Unlock()
		})
	}
	wg.Wait()
	m.updateMetrics()
}

func (m *Membership) space(kind string) *Keyspace {
	for i := range m.spaces {
		if m.spaces[i].Kind == kind {
			return &m.spaces[i]
		}
	}
	return nil
}

// tick is one round: look at the members, release what is no longer ours,
// renew the Lease with what we hold and claim, and start the claims no one
// else holds.
func (m *Membership) tick(ctx context.Context) {
	log := m.log()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RenewDeadline)
	defer cancel()
	if err := m.observe(ctx); err != nil {
		renewFailures.Inc()
		log.Error(err, "Cannot list the shard Leases")
		return
	}
	members := m.liveMembers()
	var drop []ref
	claimed := 0
	for _, ks := range m.spaces {
		keys, err := ks.List(ctx)
		if err != nil {
			log.Error(err, "Cannot list keys; their ownership stays as it is this round", "kind", ks.Kind)
			continue
		}
		exists := make(map[string]bool, len(keys))
		m.mu.Lock()
		for _, k := range keys {
			exists[k] = true
			r := ref{ks.Kind, k}
			want := Owner(ks.Kind+"/"+k, members) == m.cfg.Identity
			switch {
			case m.owned[r] && !want:
				drop = append(drop, r)
			case m.pending[r] && !want:
				delete(m.pending, r)
			case want && !m.owned[r] && !m.pending[r] && !m.releasing[r] && !m.heldByOthers(r):
				m.pending[r] = true
				claimed++
			}
		}
		// Keys that are gone: stop what still runs, forget the claims.
		for r := range m.owned {
			if r.kind == ks.Kind && !exists[r.key] {
				drop = append(drop, r)
			}
		}
		for r := range m.pending {
			if r.kind == ks.Kind && !exists[r.key] {
				delete(m.pending, r)
			}
		}
		for r := range m.locks {
			if r.kind == ks.Kind && !exists[r.key] && !m.owned[r] && !m.releasing[r] {
				delete(m.locks, r)
			}
		}
		m.mu.Unlock()
	}
	if len(drop) > 0 {
		log.Info("Releasing keys another member owns now", "keys", len(drop), "members", len(members))
		m.release(drop)
	}
	if err := m.renew(ctx); err != nil {
		renewFailures.Inc()
		log.Error(err, "Cannot renew the shard Lease")
		return
	}
	m.mu.Lock()
	pending := len(m.pending)
	m.mu.Unlock()
	if pending == 0 {
		m.updateMetrics()
		return
	}
	// The claims are on the hub now: a list read after that write shows
	// every claim that could compete with ours.
	if err := m.observe(ctx); err != nil {
		log.Error(err, "Cannot list the shard Leases to confirm claims")
		return
	}
	acquired := map[string][]string{}
	m.mu.Lock()
	if m.now().Sub(m.renewed) > m.cfg.RenewDeadline {
		// The renewal is too old to start anything on: the watchdog is
		// stopping everything, or is about to.
		m.mu.Unlock()
		return
	}
	for r := range m.pending {
		if !m.heldByOthers(r) {
			delete(m.pending, r)
			m.owned[r] = true
			acquired[r.kind] = append(acquired[r.kind], r.key)
		}
	}
	m.mu.Unlock()
	for kind, keys := range acquired {
		log.Info("Acquired keys", "kind", kind, "keys", len(keys))
		if ks := m.space(kind); ks != nil && ks.Acquired != nil {
			for _, k := range keys {
				ks.Acquired(k)
			}
		}
	}
	m.updateMetrics()
}

// heldByOthers: another live member holds or claims r. m.mu is held.
func (m *Membership) heldByOthers(r ref) bool {
	now := m.now()
	for _, o := range m.others {
		if now.Sub(o.seen) < o.duration && o.held[r] {
			return true
		}
	}
	return false
}

// liveMembers are this replica and the other members whose Lease has not
// expired, sorted.
func (m *Membership) liveMembers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	members := []string{m.cfg.Identity}
	for id, o := range m.others {
		if now.Sub(o.seen) < o.duration {
			members = append(members, id)
		}
	}
	slices.Sort(members)
	if len(members) != m.members {
		m.log().Info("Shard members changed", "members", members)
		m.members = len(members)
	}
	return members
}

// observe lists the member Leases from the hub and notes which changed.
// Leases expired for long are deleted: their replicas are gone.
func (m *Membership) observe(ctx context.Context) error {
	list, err := m.cfg.Leases.Leases(m.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: MemberLabel + "=true"})
	if err != nil {
		return err
	}
	now := m.now()
	var stale []coordinationv1.Lease
	m.mu.Lock()
	present := map[string]bool{}
	for _, l := range list.Items {
		id := ""
		if l.Spec.HolderIdentity != nil {
			id = *l.Spec.HolderIdentity
		}
		if id == "" || id == m.cfg.Identity {
			continue
		}
		present[id] = true
		o, ok := m.others[id]
		if !ok || o.resourceVersion != l.ResourceVersion {
			held, err := decodeHeld(l.Annotations[HeldAnnotation])
			if err != nil {
				// Unreadable: treat the member as holding nothing new, but
				// keep what we knew it held, which is the safe side.
				m.log().Error(err, "Cannot read a member's held keys", "member", id)
				if ok {
					held = o.held
				}
			}
			d := time.Duration(ptrOr(l.Spec.LeaseDurationSeconds, 0)) * time.Second
			o = &observed{resourceVersion: l.ResourceVersion, seen: now, duration: d, held: held}
			m.others[id] = o
		}
		if now.Sub(o.seen) > 4*o.duration+time.Minute {
			stale = append(stale, l)
		}
	}
	for id := range m.others {
		if !present[id] {
			delete(m.others, id)
		}
	}
	m.mu.Unlock()
	for _, l := range stale {
		rv := l.ResourceVersion
		err := m.cfg.Leases.Leases(m.cfg.Namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err == nil {
			m.log().Info("Deleted the Lease of a member gone for long", "member", ptrOr(l.Spec.HolderIdentity, ""))
		}
	}
	return nil
}

// renew writes this replica's Lease: renewTime now and the keys it owns,
// claims or is still stopping.
func (m *Membership) renew(ctx context.Context) error {
	m.mu.Lock()
	held := map[string][]string{}
	for _, set := range []map[ref]bool{m.owned, m.pending, m.releasing} {
		for r := range set {
			held[r.kind] = append(held[r.kind], r.key)
		}
	}
	lease := m.lease
	m.mu.Unlock()
	for k := range held {
		slices.Sort(held[k])
		held[k] = slices.Compact(held[k])
	}
	raw, err := json.Marshal(held)
	if err != nil {
		return err
	}
	sent := m.now()
	leases := m.cfg.Leases.Leases(m.cfg.Namespace)
	if lease == nil {
		lease, err = leases.Get(ctx, m.leaseName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			lease, err = nil, nil
		} else if err != nil {
			return err
		}
	}
	wall := metav1.NewMicroTime(time.Now())
	seconds := int32(m.cfg.LeaseDuration / time.Second)
	if lease == nil {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: m.leaseName(), Namespace: m.cfg.Namespace}}
	} else {
		lease = lease.DeepCopy()
	}
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Labels[MemberLabel] = "true"
	lease.Annotations[HeldAnnotation] = string(raw)
	lease.Spec.HolderIdentity = &m.cfg.Identity
	lease.Spec.LeaseDurationSeconds = &seconds
	lease.Spec.RenewTime = &wall
	if lease.Spec.AcquireTime == nil {
		lease.Spec.AcquireTime = &wall
	}
	var out *coordinationv1.Lease
	if lease.ResourceVersion == "" {
		out, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	} else {
		out, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err) {
			// Read it afresh next round.
			m.mu.Lock()
			m.lease = nil
			m.mu.Unlock()
		}
		return err
	}
	m.mu.Lock()
	m.lease, m.renewed = out, sent
	m.mu.Unlock()
	return nil
}

func decodeHeld(raw string) (map[ref]bool, error) {
	held := map[ref]bool{}
	if raw == "" {
		return held, nil
	}
	var byKind map[string][]string
	if err := json.Unmarshal([]byte(raw), &byKind); err != nil {
		return held, fmt.Errorf("annotation %s: %w", HeldAnnotation, err)
	}
	for kind, keys := range byKind {
		for _, k := range keys {
			held[ref{kind, k}] = true
		}
	}
	return held, nil
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func (m *Membership) updateMetrics() {
	m.mu.Lock()
	counts := map[string]int{}
	for _, ks := range m.spaces {
		counts[ks.Kind] = 0
	}
	for r := range m.owned {
		counts[r.kind]++
	}
	members := m.members
	m.mu.Unlock()
	membersGauge.Set(float64(members))
	for kind, n := range counts {
		ownedGauge.WithLabelValues(kind).Set(float64(n))
	}
}
