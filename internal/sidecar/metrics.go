package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sidecar's own series, registered on the registry given
// to New.
type metrics struct {
	clients       prometheus.Gauge
	subscriptions prometheus.Gauge
	sent          prometheus.Counter
	conflated     prometheus.Counter
	slowCloses    prometheus.Counter
	closes        *prometheus.CounterVec
	authDenials   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodemirror_sidecar_clients", Help: "Websocket clients connected.",
		}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodemirror_sidecar_subscriptions", Help: "Active subscriptions over all clients.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodemirror_sidecar_events_sent_total", Help: "Messages written to websocket clients.",
		}),
		conflated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodemirror_sidecar_events_conflated_total", Help: "Pending events replaced by a newer event for the same object before a slow client read them.",
		}),
		slowCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodemirror_sidecar_slow_client_closes_total", Help: "Clients closed with 4000 because they fell too far behind, stopped reading or did not answer a ping.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemirror_sidecar_closes_total", Help: "Websocket connections the sidecar decided to close, by close code (4000 resume, 4001 unauthorized, 4002 invalid messages).",
		}, []string{"code"}),
		authDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemirror_sidecar_auth_denials_total", Help: "Requests refused, by reason (unauthenticated, forbidden, rate_limited, too_many_connections, too_many_lists, invalid_messages, origin, host).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.subscriptions, m.sent, m.conflated, m.slowCloses, m.closes, m.authDenials)
	}
	return m
}
