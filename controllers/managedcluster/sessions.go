package managedcluster

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/session"
)

// running is a session and what it was started from.
type running struct {
	session *session.Session
	// hash covers everything the session was started from; a different
	// hash means a restart.
	hash string
	// config is the member rest.Config the session runs with, built by
	// the Policy (dial guard, bounded transport); Member hands out copies.
	config *rest.Config
	// credential is the kubeconfig's credential the session runs with.
	credential fleetv1.MemberCredential
	// version says cheaply, from cached metadata only, that nothing the
	// hash covers can have changed since it was computed.
	version inputVersion
}

// inputVersion identifies a ManagedCluster spec and a Secret revision.
type inputVersion struct {
	uid            types.UID
	generation     int64
	secretRevision string
}

// sessions holds one running session per ManagedCluster.
type sessions struct {
	mu sync.Mutex
	m  map[types.NamespacedName]running
}

func (s *sessions) get(key types.NamespacedName) (running, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[key]
	return r, ok
}

func (s *sessions) put(key types.NamespacedName, r running) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[types.NamespacedName]running{}
	}
	s.m[key] = r
}

// stop stops the cluster's session, if any, and waits for it to end.
func (s *sessions) stop(key types.NamespacedName) bool {
	s.mu.Lock()
	r, ok := s.m[key]
	delete(s.m, key)
	s.mu.Unlock()
	if ok {
		r.session.Stop()
	}
	return ok
}

// stopAll stops every session and waits for all of them.
func (s *sessions) stopAll() {
	s.mu.Lock()
	all := s.m
	s.m = nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range all {
		wg.Go(r.session.Stop)
	}
	wg.Wait()
}
