package session

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Per-cluster metrics, labelled with the ManagedCluster's namespace and
// name. A session deletes its series when it stops, so gone clusters leave
// none.
var (
	nodesMirrored = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodemirror_nodes_mirrored",
		Help: "Nodes of the member cluster that have a NodeSnapshot.",
	}, clusterLabels)
	memberEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_member_events_total",
		Help: "Node add, update and delete notifications received from the member cluster, resyncs included.",
	}, clusterLabels)
	hubWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_hub_writes_total",
		Help: "NodeSnapshot writes made to the hub, by operation (create, update, delete).",
	}, append(clusterLabels, "operation"))
	writesSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_hub_writes_skipped_total",
		Help: "Node changes that changed nothing mirrored and so caused no hub write.",
	}, clusterLabels)
	probeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_member_probe_failures_total",
		Help: "Member health probes (/readyz, else /healthz) that did not answer ok.",
	}, clusterLabels)
	propagationLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nodemirror_propagation_lag_seconds",
		Help:    "Time from receiving a member node change to its NodeSnapshot write completing.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, clusterLabels)
)

// clusterLabels name a ManagedCluster.
var clusterLabels = []string{"namespace", "name"}

func init() {
	metrics.Registry.MustRegister(nodesMirrored, memberEvents, hubWrites, writesSkipped, probeFailures, propagationLag)
}

// clusterMetrics are one cluster's series.
type clusterMetrics struct {
	cluster prometheus.Labels
	nodes   prometheus.Gauge
	events  prometheus.Counter
	creates prometheus.Counter
	updates prometheus.Counter
	deletes prometheus.Counter
	skipped prometheus.Counter
	probes  prometheus.Counter
	lag     prometheus.Observer
}

func newClusterMetrics(cluster types.NamespacedName) *clusterMetrics {
	l := prometheus.Labels{"namespace": cluster.Namespace, "name": cluster.Name}
	op := func(o string) prometheus.Labels {
		return prometheus.Labels{"namespace": cluster.Namespace, "name": cluster.Name, "operation": o}
	}
	return &clusterMetrics{
		cluster: l,
		nodes:   nodesMirrored.With(l),
		events:  memberEvents.With(l),
		creates: hubWrites.With(op("create")),
		updates: hubWrites.With(op("update")),
		deletes: hubWrites.With(op("delete")),
		skipped: writesSkipped.With(l),
		probes:  probeFailures.With(l),
		lag:     propagationLag.With(l),
	}
}

func (m *clusterMetrics) forget() {
	nodesMirrored.Delete(m.cluster)
	memberEvents.Delete(m.cluster)
	hubWrites.DeletePartialMatch(m.cluster)
	writesSkipped.Delete(m.cluster)
	probeFailures.Delete(m.cluster)
	propagationLag.Delete(m.cluster)
}
