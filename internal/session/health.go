package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/internal/member"
)

// Connection is what the session knows about reaching the member API server;
// Reason is one of the Connected reasons of api/v1alpha1.
type Connection struct {
	// Status is True (healthy), False (answers, but unhealthy or refusing
	// us) or Unknown (cannot be reached, or not probed yet).
	Status  metav1.ConditionStatus
	Reason  string
	Message string
}

// ProbeOptions tune the health prober.
type ProbeOptions struct {
	// Interval between probes.
	Interval time.Duration
	// Timeout of one probe.
	Timeout time.Duration
	// FailureThreshold is how many probes in a row must fail before a
	// healthy connection is reported lost.
	FailureThreshold int
}

func (o *ProbeOptions) defaults() {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.FailureThreshold <= 0 {
		o.FailureThreshold = 3
	}
}

// probe asks /readyz, and /healthz where /readyz does not exist, and
// classifies the answer.
func probe(ctx context.Context, rc rest.Interface, timeout time.Duration) Connection {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var err error
	for _, path := range []string{"/readyz", "/healthz"} {
		_, err = rc.Get().AbsPath(path).Do(ctx).Raw()
		if !apierrors.IsNotFound(err) {
			break
		}
	}
	return classify(err)
}

// classify turns a request error into a Connection. Its message is the
// operator's own words: never a response body, which the member (so the
// tenant who chose it) writes, nor its Status message or warnings.
func classify(err error) Connection {
	if err == nil {
		return Connection{metav1.ConditionTrue, fleetv1.ReasonHealthy, "member API server is healthy"}
	}
	var (
		status    apierrors.APIStatus
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		denied    *member.DeniedError
		redirect  *member.RedirectError
		tooLarge  *member.ResponseTooLargeError
	)
	switch {
	case errors.As(err, &denied):
		return Connection{metav1.ConditionFalse, fleetv1.ReasonAddressDenied, denied.Error() + "; the operator's --member-allow-cidrs can open a range"}
	case errors.As(err, &redirect):
		return Connection{metav1.ConditionFalse, fleetv1.ReasonRedirected, redirect.Error()}
	case errors.As(err, &tooLarge):
		return Connection{metav1.ConditionFalse, fleetv1.ReasonMemberResponseTooLarge, tooLarge.Error()}
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return Connection{metav1.ConditionFalse, fleetv1.ReasonCertificateUntrusted, "member API server certificate is not trusted by the kubeconfig's CA: " + clean(err)}
	case apierrors.IsUnauthorized(err):
		return Connection{metav1.ConditionFalse, fleetv1.ReasonUnauthorized, "member API server refused the kubeconfig's credentials (401)"}
	case apierrors.IsForbidden(err):
		return Connection{metav1.ConditionFalse, fleetv1.ReasonForbidden, "member RBAC forbids it (403): bind the ClusterRole of config/member to the kubeconfig's user"}
	case errors.As(err, &status) && status.Status().Code >= http.StatusInternalServerError && status.Status().Code != http.StatusGatewayTimeout:
		return Connection{metav1.ConditionFalse, fleetv1.ReasonUnhealthy, fmt.Sprintf("member API server reports unhealthy (%d)", status.Status().Code)}
	case errors.As(err, &status) && status.Status().Code != http.StatusGatewayTimeout && status.Status().Code != 0:
		return Connection{metav1.ConditionFalse, fleetv1.ReasonUnhealthy, fmt.Sprintf("member API server answered %d", status.Status().Code)}
	default:
		return Connection{metav1.ConditionUnknown, fleetv1.ReasonUnreachable, "member API server unreachable, snapshots are stale: " + clean(err)}
	}
}

// clean is the first line of a transport error, bounded: such errors name
// addresses and causes, never a body, but may carry the tenant's URL.
func clean(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	const limit = 256
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// hysteresis holds the reported connection steady against single lost
// probes: a healthy connection is reported lost only after threshold
// failures in a row; any other change is reported at once.
type hysteresis struct {
	threshold int
	failures  int
	reported  Connection
}

// observe records one probe result and returns what to report.
func (h *hysteresis) observe(c Connection) Connection {
	if c.Status == metav1.ConditionTrue {
		h.failures = 0
		h.reported = c
		return h.reported
	}
	h.failures++
	if h.reported.Status != metav1.ConditionTrue || h.failures >= h.threshold {
		h.reported = c
	}
	return h.reported
}
