package managedcluster_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

// A tenant chooses the member: these specs run members that attack the
// shared operator, beside an honest cluster that must keep mirroring.
var _ = Describe("A hostile member", func() {
	var (
		f    *fixture
		fake *framework.FakeMember
	)
	BeforeEach(func() {
		f = newFixture()
		fake = framework.NewFakeMember()
		DeferCleanup(fake.Close)
	})

	It("cannot make the operator read an endless /readyz, and others keep mirroring", func() {
		const streamed = 512 << 20
		var served atomic.Int64
		fake.Handle("/readyz", func(w http.ResponseWriter, r *http.Request) {
			chunk := []byte(strings.Repeat("a", 1<<20))
			for range streamed / len(chunk) {
				n, err := w.Write(chunk)
				served.Add(int64(n))
				select {
				case <-fake.Done():
					return
				default:
				}
				if err != nil || r.Context().Err() != nil {
					return
				}
			}
		})
		honest := f.node(member1, "honest", nil)
		f.secret("honest-kubeconfig", member1Direct)
		f.cluster("honest")
		Eventually(f.condition("honest", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))

		runtime.GC()
		var baseline runtime.MemStats
		runtime.ReadMemStats(&baseline)
		var peak atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var m runtime.MemStats
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
			}
		}()
		f.secret("flood-kubeconfig", fake.Kubeconfig())
		f.cluster("flood")
		Eventually(f.condition("flood", fleetv1.ConditionConnected)).Should(Equal("False/MemberResponseTooLarge"))
		probes := fake.Requests.Load()
		Eventually(fake.Requests.Load).Should(BeNumerically(">", probes+3), "the operator keeps probing")

		By("mirroring the honest cluster meanwhile")
		Expect(framework.PatchLabel(ctx, member1, honest, "during", ptr.To("flood"))).To(Succeed())
		Eventually(func() map[string]string { return f.snapshot("honest", honest)().Status.Labels }).Should(HaveKeyWithValue("during", "flood"))
		close(stop)
		<-sampled

		grew := int64(peak.Load()) - int64(baseline.HeapAlloc)
		GinkgoWriter.Printf("heap: baseline %d MiB, peak %d MiB while the member streamed; it served %d MiB in all\n",
			baseline.HeapAlloc>>20, peak.Load()>>20, served.Load()>>20)
		Expect(grew).To(BeNumerically("<", 64<<20), "the operator's heap grew by %d MiB", grew>>20)
		Expect(f.get("flood").Status.Conditions).To(ContainElement(HaveField("Message", ContainSubstring("exceeds 1048576 bytes"))))
	})

	It("cannot make the operator read a giant protobuf watch event", func() {
		// The node watch in the encoding client-go asks for: one frame that
		// announces 1 GiB, then streams it; a newline every 100 bytes, which
		// a JSON event bound would take for the ends of small events.
		var served atomic.Int64
		fake.Handle("/api/v1/nodes", func(w http.ResponseWriter, r *http.Request) {
			if v := r.URL.Query().Get("watch"); v != "true" && v != "1" {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`))
				return
			}
			w.Header().Set("Content-Type", "application/vnd.kubernetes.protobuf;stream=watch")
			_, _ = w.Write([]byte{0x40, 0, 0, 0})
			chunk := []byte(strings.Repeat(strings.Repeat("p", 99)+"\n", 1<<14))
			for served.Load() < 1<<30 {
				n, err := w.Write(chunk)
				served.Add(int64(n))
				if err != nil || r.Context().Err() != nil {
					return
				}
				select {
				case <-fake.Done():
					return
				default:
				}
			}
		})
		f.secret("giant-kubeconfig", fake.Kubeconfig())
		f.cluster("giant")
		Eventually(f.condition("giant", fleetv1.ConditionConnected)).Should(Equal("False/MemberResponseTooLarge"))
		Expect(f.get("giant").Status.Conditions).To(ContainElement(HaveField("Message", ContainSubstring("watch event"))))
		Expect(served.Load()).To(BeNumerically("<", 64<<20), "the operator read %d MiB of one event", served.Load()>>20)
	})

	It("never follows a redirect, so its credentials go nowhere else", func() {
		var stolen atomic.Int64
		elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			stolen.Add(1)
		}))
		DeferCleanup(elsewhere.Close)
		fake.Handle("/readyz", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
		})
		f.secret("redir-kubeconfig", fake.Kubeconfig())
		f.cluster("redir")
		Eventually(f.condition("redir", fleetv1.ConditionConnected)).Should(Equal("False/Redirected"))
		Consistently(stolen.Load, 2*time.Second).Should(BeZero(), "a request reached the redirect target")
	})

	It("cannot get its words into conditions, Events or logs", func() {
		const marker = "MARKER-0f1e2d"
		forbidden := func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Warning", `299 - "`+marker+` warning"`)
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"%s <script>%s</script>"}`, marker, strings.Repeat(marker, 100))
		}
		fake.Handle("/readyz", forbidden)
		fake.Handle("/api/v1/nodes", forbidden)
		f.secret("loud-kubeconfig", fake.Kubeconfig())
		f.cluster("loud")
		Eventually(f.condition("loud", fleetv1.ConditionConnected)).Should(Equal("False/Forbidden"))
		Eventually(f.eventReasons("loud")).Should(ContainElement("Forbidden"))
		// A few more probes and list attempts.
		requests := fake.Requests.Load()
		Eventually(fake.Requests.Load).Should(BeNumerically(">", requests+5))

		for _, c := range f.get("loud").Status.Conditions {
			Expect(c.Message).NotTo(ContainSubstring(marker), "condition %s", c.Type)
		}
		var events eventsv1.EventList
		Expect(hub.List(ctx, &events, client.InNamespace(f.ns))).To(Succeed())
		for _, e := range events.Items {
			Expect(e.Note).NotTo(ContainSubstring(marker), "Event %s", e.Reason)
		}
		Expect(suiteLog.String()).NotTo(ContainSubstring(marker), "the operator logged what the member wrote")
	})
})
