package managedcluster

import (
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

// Per-ManagedCluster metrics the controller owns, labelled like the
// session's with namespace and name, and deleted when the cluster goes.
var (
	clusterCondition = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodemirror_cluster_condition",
		Help: "A ManagedCluster's condition: 1 for the status it has, 0 for the other two (as kube-state-metrics reports conditions).",
	}, []string{"namespace", "name", "type", "status"})
	credentialExpiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodemirror_member_credential_expiry_timestamp_seconds",
		Help: "When the member kubeconfig's credential expires (a token's exp, a client certificate's notAfter), as a Unix time; absent when it has no expiry the operator can read.",
	}, []string{"namespace", "name"})
	sessionRestarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodemirror_session_restarts_total",
		Help: "Sessions stopped and started again because the ManagedCluster's spec or its kubeconfig Secret changed.",
	}, []string{"namespace", "name"})
)

func init() {
	metrics.Registry.MustRegister(clusterCondition, credentialExpiry, sessionRestarts)
}

var conditionStatuses = []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown}

// ownedConditions are the condition types the metric reports.
var ownedConditions = []string{
	fleetv1.ConditionReady, fleetv1.ConditionReconciling, fleetv1.ConditionStalled,
	fleetv1.ConditionConnected, fleetv1.ConditionSynced,
}

// recordConditions sets the condition gauges from the status written.
func recordConditions(mc *fleetv1.ManagedCluster) {
	for _, t := range ownedConditions {
		var have metav1.ConditionStatus
		for _, c := range mc.Status.Conditions {
			if c.Type == t {
				have = c.Status
			}
		}
		for _, s := range conditionStatuses {
			v := 0.0
			if s == have {
				v = 1
			}
			clusterCondition.WithLabelValues(mc.Namespace, mc.Name, t, string(s)).Set(v)
		}
	}
}

// forgetClusterMetrics deletes every series of a cluster that is gone.
func forgetClusterMetrics(key types.NamespacedName) {
	l := prometheus.Labels{"namespace": key.Namespace, "name": key.Name}
	clusterCondition.DeletePartialMatch(l)
	credentialExpiry.Delete(l)
	sessionRestarts.Delete(l)
}

// recordCredential sets or deletes the credential expiry gauge.
func recordCredential(key types.NamespacedName, c fleetv1.MemberCredential) {
	if c.ExpiresAt == nil {
		credentialExpiry.DeleteLabelValues(key.Namespace, key.Name)
		return
	}
	credentialExpiry.WithLabelValues(key.Namespace, key.Name).Set(float64(c.ExpiresAt.Unix()))
}
