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
			Name: "nodemirror_sidecar_slow_client_closes_total", Help: "Clients closed because they fell too far behind.",
		}),
		authDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodemirror_sidecar_auth_denials_total", Help: "Requests refused, by reason (unauthenticated, forbidden, too_many_connections, origin).",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.subscriptions, m.sent, m.conflated, m.slowCloses, m.authDenials)
	}
	return m
}
