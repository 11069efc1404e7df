package shard

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	membersGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "nodemirror_shard_members",
		Help: "Live shard members this replica counts, itself included.",
	})
	ownedGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodemirror_shard_owned",
		Help: "Keys this replica owns and runs, by kind (ManagedCluster, NodeOperation).",
	}, []string{"kind"})
	renewFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodemirror_shard_renew_failures_total",
		Help: "Rounds in which the shard Leases could not be listed or this replica's Lease not renewed.",
	})
	fencedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodemirror_shard_fenced_total",
		Help: "Times this replica stopped every key it owned because its Lease was not renewed within the renew deadline.",
	})
)

func init() {
	metrics.Registry.MustRegister(membersGauge, ownedGauge, renewFailures, fencedTotal)
}
