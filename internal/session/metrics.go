package session

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Per-cluster metrics, labelled "namespace/name" of the ManagedCluster.
// A session deletes its series when it stops, so gone clusters leave none.
var (
	nodesMirrored = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodemirror_nodes_mirrored",
		Help: "Nodes of the member cluster that have a NodeSnapshot.",
	}, []string{"cluster"})
	memberEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_member_events_total",
		Help: "Node add, update and delete notifications received from the member cluster, resyncs included.",
	}, []string{"cluster"})
	hubWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_hub_writes_total",
		Help: "NodeSnapshot writes made to the hub, by operation (create, update, delete).",
	}, []string{"cluster", "operation"})
	writesSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_hub_writes_skipped_total",
		Help: "Node changes that changed nothing mirrored and so caused no hub write.",
	}, []string{"cluster"})
	propagationLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodemirror_propagation_lag_seconds",
		Help:    "Time from receiving a member node change to its NodeSnapshot write completing.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"cluster"})
)

func init() {
	metrics.Registry.MustRegister(nodesMirrored, memberEvents, hubWrites, writesSkipped, propagationLag)
}

// clusterMetrics are one cluster's series.
type clusterMetrics struct {
	cluster string
	nodes   prometheus.Gauge
	events  prometheus.Counter
	creates prometheus.Counter
	updates prometheus.Counter
	deletes prometheus.Counter
	skipped prometheus.Counter
	lag     prometheus.Observer
}

func newClusterMetrics(cluster string) *clusterMetrics {
	return &clusterMetrics{
		cluster: cluster,
		nodes:   nodesMirrored.WithLabelValues(cluster),
		events:  memberEvents.WithLabelValues(cluster),
		creates: hubWrites.WithLabelValues(cluster, "create"),
		updates: hubWrites.WithLabelValues(cluster, "update"),
		deletes: hubWrites.WithLabelValues(cluster, "delete"),
		skipped: writesSkipped.WithLabelValues(cluster),
		lag:     propagationLag.WithLabelValues(cluster),
	}
}

func (m *clusterMetrics) forget() {
	nodesMirrored.DeleteLabelValues(m.cluster)
	memberEvents.DeleteLabelValues(m.cluster)
	for _, op := range []string{"create", "update", "delete"} {
		hubWrites.DeleteLabelValues(m.cluster, op)
	}
	writesSkipped.DeleteLabelValues(m.cluster)
	propagationLag.DeleteLabelValues(m.cluster)
}
