package managedcluster

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

func TestCredentialWindow(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	warning := 14 * 24 * time.Hour
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	for _, c := range []struct {
		name      string
		expiresAt *metav1.Time
		want      string
		recheck   time.Duration
	}{
		{"no expiry", nil, "False/" + fleetv1.ReasonCredentialNoExpiry, 0},
		{"a year ahead", at(365 * 24 * time.Hour), "False/" + fleetv1.ReasonCredentialValid, 351*24*time.Hour + time.Second},
		{"just outside the window", at(warning + time.Minute), "False/" + fleetv1.ReasonCredentialValid, time.Minute + time.Second},
		{"inside the window", at(time.Hour), "True/" + fleetv1.ReasonCredentialExpiresSoon, time.Hour + time.Second},
		{"expired", at(-time.Second), "True/" + fleetv1.ReasonCredentialExpired, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			mc := &fleetv1.ManagedCluster{}
			cred := fleetv1.MemberCredential{Type: "Token", ExpiresAt: c.expiresAt}
			setCredential(mc, cred, now, warning, func(typ string, s metav1.ConditionStatus, reason, msg string) {
				meta.SetStatusCondition(&mc.Status.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg})
			})
			got := meta.FindStatusCondition(mc.Status.Conditions, fleetv1.ConditionCredentialExpiring)
			if got == nil || string(got.Status)+"/"+got.Reason != c.want {
				t.Errorf("condition = %+v, want %s", got, c.want)
			}
			if d := credentialRecheck(&cred, now, warning); d != c.recheck {
				t.Errorf("recheck in %s, want %s", d, c.recheck)
			}
		})
	}
}
