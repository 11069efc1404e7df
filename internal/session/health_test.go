package session

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status metav1.ConditionStatus
		reason string
	}{
		{"ok", nil, metav1.ConditionTrue, fleetv1.ReasonHealthy},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, metav1.ConditionUnknown, fleetv1.ReasonUnreachable},
		{"wrong CA", fmt.Errorf("Get: %w", x509.UnknownAuthorityError{}), metav1.ConditionFalse, fleetv1.ReasonCertificateUntrusted},
		{"unauthorized", apierrors.NewUnauthorized("no"), metav1.ConditionFalse, fleetv1.ReasonUnauthorized},
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("no")), metav1.ConditionFalse, fleetv1.ReasonForbidden},
		{"readyz failing", apierrors.NewGenericServerResponse(http.StatusInternalServerError, "get", schema.GroupResource{}, "", "[-]etcd failed", 0, true), metav1.ConditionFalse, fleetv1.ReasonUnhealthy},
		{"gateway timeout", apierrors.NewTimeoutError("slow", 1), metav1.ConditionUnknown, fleetv1.ReasonUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := classify(tc.err)
			if c.Status != tc.status || c.Reason != tc.reason || c.Message == "" {
				t.Fatalf("classify(%v) = %+v, want %s/%s", tc.err, c, tc.status, tc.reason)
			}
		})
	}
}

func TestHysteresis(t *testing.T) {
	healthy := classify(nil)
	lost := Connection{metav1.ConditionUnknown, fleetv1.ReasonUnreachable, "down"}
	refused := Connection{metav1.ConditionFalse, fleetv1.ReasonForbidden, "no"}
	h := hysteresis{threshold: 3}

	if got := h.observe(lost); got != lost {
		t.Fatalf("first result is reported at once, got %+v", got)
	}
	if got := h.observe(healthy); got != healthy {
		t.Fatalf("recovery is reported at once, got %+v", got)
	}
	for i := 1; i < 3; i++ {
		if got := h.observe(lost); got != healthy {
			t.Fatalf("failure %d of 3 flipped the condition: %+v", i, got)
		}
	}
	if got := h.observe(lost); got != lost {
		t.Fatalf("third failure in a row must be reported, got %+v", got)
	}
	if got := h.observe(refused); got != refused {
		t.Fatalf("changes between failures are reported at once, got %+v", got)
	}
	h.observe(healthy)
	h.observe(lost)
	if got := h.observe(healthy); got != healthy {
		t.Fatalf("a success resets the count, got %+v", got)
	}
	h.observe(lost)
	if got := h.observe(lost); got != healthy {
		t.Fatalf("two failures after a reset must not flip, got %+v", got)
	}
}
