package session

import (
	"context"
	"sync"

	"golang.org/x/time/rate"
)

// WriteBudget gives every cluster its own share of the hub write budget:
// a token bucket per cluster, in front of the hub client's shared limiter.
// A cluster whose nodes churn spends its own tokens only, so the shared
// budget keeps room for the others, and their writes do not queue behind
// its writes. A nil *WriteBudget does not limit.
type WriteBudget struct {
	qps   rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

// NewWriteBudget returns a budget of qps writes per second (bursts of
// burst) for each cluster.
func NewWriteBudget(qps float64, burst int) *WriteBudget {
	return &WriteBudget{qps: rate.Limit(qps), burst: max(burst, 1), buckets: map[string]*rate.Limiter{}}
}

// Wait blocks until cluster may make one hub write, or ctx ends.
func (b *WriteBudget) Wait(ctx context.Context, cluster string) error {
	if b == nil || b.qps <= 0 {
		return nil
	}
	b.mu.Lock()
	l, ok := b.buckets[cluster]
	if !ok {
		l = rate.NewLimiter(b.qps, b.burst)
		b.buckets[cluster] = l
	}
	b.mu.Unlock()
	return l.Wait(ctx)
}

// Forget drops a cluster's bucket when its session ends.
func (b *WriteBudget) Forget(cluster string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	delete(b.buckets, cluster)
	b.mu.Unlock()
}
