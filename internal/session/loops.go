package session

import (
	"context"
	"encoding/json"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// probeLoop probes the member every Probe.Interval, reports connection
// changes through the hysteresis, and reads the member's version on every
// (re)connect, until ctx ends.
func (s *Session) probeLoop(ctx context.Context) {
	h := hysteresis{threshold: s.cfg.Probe.FailureThreshold}
	ticker := s.cfg.Clock.NewTicker(s.cfg.Probe.Interval)
	defer ticker.Stop()
	for {
		seen := probe(ctx, s.rest, s.cfg.Probe.Timeout)
		if ctx.Err() != nil {
			return
		}
		if seen.Status != metav1.ConditionTrue {
			s.metrics.probes.Inc()
		}
		reported := h.observe(seen)
		s.mu.Lock()
		wasHealthy := s.probed.Status == metav1.ConditionTrue
		changed := s.probed != reported
		s.probed = reported
		s.mu.Unlock()
		if reported.Status == metav1.ConditionTrue && !wasHealthy {
			// (Re)connected: the member may have been upgraded meanwhile.
			if v, err := s.serverVersion(ctx); err == nil {
				s.mu.Lock()
				changed = changed || s.version != v
				s.version = v
				s.mu.Unlock()
			}
		}
		if changed {
			s.log.Info("Member connection changed", "status", reported.Status, "reason", reported.Reason, "message", reported.Message)
			s.notify()
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
	}
}

// serverVersion reads the member's /version.
func (s *Session) serverVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Probe.Timeout)
	defer cancel()
	body, err := s.rest.Get().AbsPath("/version").Do(ctx).Raw()
	if err != nil {
		return "", err
	}
	var info version.Info
	if err := json.Unmarshal(body, &info); err != nil {
		return "", err
	}
	v := info.GitVersion
	if len(v) > fleetv1.MaxVersionLength {
		v = v[:fleetv1.MaxVersionLength]
	}
	return v, nil
}

// notifyLoop calls OnChange when Status has changed since the last call,
// at most once per NotifyInterval, so that a burst of node changes costs
// one status update.
func (s *Session) notifyLoop(ctx context.Context) {
	var last *Status
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
		}
		st := s.Status()
		if last == nil || !equality.Semantic.DeepEqual(*last, st) {
			last = &st
			s.cfg.OnChange(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(s.cfg.NotifyInterval):
		}
	}
}
