package managedcluster_test

import (
	"fmt"
	"net"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
	"github.com/nodemirror/nodemirror/test/framework"
)

const (
	timeout = 15 * time.Second
	poll    = 50 * time.Millisecond
)

func init() {
	SetDefaultEventuallyTimeout(timeout)
	SetDefaultEventuallyPollingInterval(poll)
	SetDefaultConsistentlyDuration(time.Second)
	SetDefaultConsistentlyPollingInterval(100 * time.Millisecond)
}

var _ = Describe("Mirroring", func() {
	It("mirrors the selected nodes and follows adds, updates and deletes", func() {
		f := newFixture()
		a := f.node(member1, "a", map[string]string{"node-role.kubernetes.io/control-plane": ""})
		b := f.node(member1, "b", nil)
		// Same member, not selected: must never cross the wire.
		_, err := framework.CreateNode(ctx, member1, framework.NewNode(f.nodeName("other"), nil))
		Expect(err).NotTo(HaveOccurred())
		f.secret("alpha-kubeconfig", member1Direct)
		mc := f.cluster("alpha")

		Eventually(f.nodeNames("alpha")).Should(Equal([]string{a, b}))
		Eventually(f.condition("alpha", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		Expect(f.condition("alpha", fleetv1.ConditionConnected)()).To(Equal("True/Healthy"))
		Expect(f.condition("alpha", fleetv1.ConditionSynced)()).To(Equal("True/Synced"))
		Expect(f.condition("alpha", fleetv1.ConditionReconciling)()).To(HavePrefix("False/"))
		Expect(f.condition("alpha", fleetv1.ConditionStalled)()).To(HavePrefix("False/"))
		Expect(f.kstatus("alpha")()).To(Equal(status.CurrentStatus))

		got := f.get("alpha")
		Expect(got.Finalizers).To(ContainElement(fleetv1.ManagedClusterFinalizer))
		Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		Expect(got.Status.KubernetesVersion).To(Equal("v1.37.2"))
		Expect(got.Status.Nodes).To(Equal(fleetv1.NodeSummary{Total: 2, Ready: 2}))
		Expect(got.Status.Capacity.Cpu().Equal(resource.MustParse("8"))).To(BeTrue(), "capacity %v", got.Status.Capacity)
		Expect(got.Status.Allocatable.Memory().Equal(resource.MustParse("30Gi"))).To(BeTrue(), "allocatable %v", got.Status.Allocatable)

		snap := f.snapshots("alpha")[a]
		Expect(snap.Name).To(Equal("alpha." + a))
		Expect(snap.Labels).To(HaveKeyWithValue(fleetv1.ClusterLabel, "alpha"))
		Expect(metav1.GetControllerOf(&snap)).NotTo(BeNil())
		Expect(metav1.GetControllerOf(&snap).UID).To(Equal(mc.UID))
		Expect(snap.Spec).To(Equal(fleetv1.NodeSnapshotSpec{ClusterName: "alpha", NodeName: a}))
		Expect(snap.Status.Columns.Status).To(Equal("Ready"))
		Expect(snap.Status.Roles).To(Equal([]string{"control-plane"}))
		Expect(snap.Status.Columns.Roles).To(Equal("control-plane"))
		Expect(snap.Status.Columns.InternalIP).To(Equal("10.0.0.1"))
		Expect(snap.Status.NodeInfo.KubeletVersion).To(Equal("v1.37.2"))
		Expect(snap.Status.Labels).To(HaveKeyWithValue(specLabel, f.label))
		Expect(snap.Status.Conditions).To(HaveLen(2))
		Expect(snap.Status.SourceResourceVersion).NotTo(BeEmpty())
		Expect(snap.Status.NodeCreationTimestamp.IsZero()).To(BeFalse())

		By("updating a label, cordoning and turning a node NotReady")
		Expect(framework.PatchLabel(ctx, member1, a, "team", ptr.To("payments"))).To(Succeed())
		Eventually(func() map[string]string { return f.snapshot("alpha", a)().Status.Labels }).Should(HaveKeyWithValue("team", "payments"))
		_, err = member1.CoreV1().Nodes().Patch(ctx, b, "application/merge-patch+json", []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { return f.snapshot("alpha", b)().Status.Columns.Status }).Should(Equal("Ready,SchedulingDisabled"))
		Expect(framework.SetReady(ctx, member1, b, corev1.ConditionFalse)).To(Succeed())
		Eventually(func() string { return f.snapshot("alpha", b)().Status.Columns.Status }).Should(Equal("NotReady,SchedulingDisabled"))
		Eventually(func() fleetv1.NodeSummary { return f.get("alpha").Status.Nodes }).Should(Equal(fleetv1.NodeSummary{Total: 2, Ready: 1, Unschedulable: 1}))

		By("adding and deleting nodes")
		c := f.node(member1, "c", nil)
		Eventually(f.nodeNames("alpha")).Should(ConsistOf(a, b, c))
		Expect(member1.CoreV1().Nodes().Delete(ctx, a, metav1.DeleteOptions{})).To(Succeed())
		Eventually(f.nodeNames("alpha")).Should(ConsistOf(b, c))
	})

	It("keeps same-named nodes of two clusters in one namespace apart", func() {
		f := newFixture()
		n := f.node(member1, "w1", map[string]string{"topology.kubernetes.io/region": "east"})
		Expect(f.node(member2, "w1", map[string]string{"topology.kubernetes.io/region": "west"})).To(Equal(n))
		f.secret("east-kubeconfig", member1Direct)
		f.secret("west-kubeconfig", member2Admin)
		f.cluster("east")
		f.cluster("west")

		Eventually(f.nodeNames("east")).Should(Equal([]string{n}))
		Eventually(f.nodeNames("west")).Should(Equal([]string{n}))
		Expect(f.snapshots("east")[n].Name).To(Equal("east." + n))
		Expect(f.snapshots("west")[n].Name).To(Equal("west." + n))
		Expect(f.snapshots("east")[n].Status.Labels).To(HaveKeyWithValue("topology.kubernetes.io/region", "east"))
		Expect(f.snapshots("west")[n].Status.Labels).To(HaveKeyWithValue("topology.kubernetes.io/region", "west"))
	})

	It("makes no hub write for heartbeats, one for a label change, and coalesces bursts", func() {
		f := newFixture()
		nodes := []string{f.node(member1, "h1", nil), f.node(member1, "h2", nil), f.node(member1, "h3", nil)}
		f.secret("hb-kubeconfig", member1Direct)
		f.cluster("hb")
		Eventually(f.condition("hb", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		Eventually(f.nodeNames("hb")).Should(ConsistOf(nodes))
		key := keyOf(f, "hb")

		writes := f.snapshotWrites()
		events := metric("nodemirror_member_events_total", key)
		const rounds = 10
		for range rounds {
			for _, n := range nodes {
				Expect(framework.Heartbeat(ctx, member1, n)).To(Succeed())
			}
		}
		// Every heartbeat reached the operator...
		Eventually(func() float64 { return metric("nodemirror_member_events_total", key) }).Should(BeNumerically(">=", events+float64(rounds*len(nodes))))
		Eventually(func() float64 { return metric("nodemirror_hub_writes_skipped_total", key) }).Should(BeNumerically(">", 0))
		// ...and none became a hub write.
		Consistently(f.snapshotWrites).Should(Equal(writes))

		By("changing one label")
		Expect(framework.PatchLabel(ctx, member1, nodes[0], "tier", ptr.To("gold"))).To(Succeed())
		Eventually(func() map[string]string { return f.snapshot("hb", nodes[0])().Status.Labels }).Should(HaveKeyWithValue("tier", "gold"))
		Consistently(f.snapshotWrites).Should(Equal(writes + 1))

		By("changing one node's label many times in a burst")
		writes = f.snapshotWrites()
		const burst = 20
		for i := range burst {
			Expect(framework.PatchLabel(ctx, member1, nodes[1], "burst", ptr.To(fmt.Sprint(i)))).To(Succeed())
		}
		Eventually(func() map[string]string { return f.snapshot("hb", nodes[1])().Status.Labels }).Should(HaveKeyWithValue("burst", fmt.Sprint(burst-1)))
		Consistently(f.snapshotWrites).Should(And(BeNumerically(">", writes), BeNumerically("<=", writes+burst)))
		GinkgoWriter.Printf("burst of %d label changes cost %d hub writes\n", burst, f.snapshotWrites()-writes)
	})

	It("applies nodeSelector and mirror filter changes, removing what no longer matches", func() {
		f := newFixture()
		pa := f.node(member1, "pa", map[string]string{"pool": "a", "example.com/team": "x"})
		pb := f.node(member1, "pb", map[string]string{"pool": "b", "example.com/team": "y"})
		f.secret("sel-kubeconfig", member1Direct)
		f.cluster("sel", func(mc *fleetv1.ManagedCluster) { mc.Spec.NodeSelector.MatchLabels["pool"] = "a" })
		Eventually(f.nodeNames("sel")).Should(Equal([]string{pa}))

		f.update("sel", func(mc *fleetv1.ManagedCluster) { mc.Spec.NodeSelector.MatchLabels["pool"] = "b" })
		Eventually(f.nodeNames("sel")).Should(Equal([]string{pb}))
		// A label someone else puts on the snapshot is theirs: the
		// operator's label removals below must leave it.
		Expect(hub.Patch(ctx, &metav1.PartialObjectMetadata{
			TypeMeta:   metav1.TypeMeta{APIVersion: fleetv1.GroupVersion.String(), Kind: "NodeSnapshot"},
			ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: "sel." + pb},
		}, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"platform.example.com/owner":"ops"}}}`)), client.FieldOwner("platform-team"))).To(Succeed())
		metaLabels := func() map[string]string { return f.snapshot("sel", pb)().Labels }

		f.update("sel", func(mc *fleetv1.ManagedCluster) {
			mc.Spec.Mirror.Labels = &fleetv1.KeyFilter{Include: []string{"pool", "example.com/"}}
		})
		Eventually(func() map[string]string { return f.snapshot("sel", pb)().Status.Labels }).Should(Equal(map[string]string{"pool": "b", "example.com/team": "y"}))
		// The snapshot was created with every label of the node; those
		// the filter now leaves out go from metadata.labels too.
		Eventually(metaLabels).Should(Equal(map[string]string{"pool": "b", "example.com/team": "y", fleetv1.ClusterLabel: "sel", "platform.example.com/owner": "ops"}))

		f.update("sel", func(mc *fleetv1.ManagedCluster) { mc.Spec.Mirror.Labels.Exclude = []string{"example.com/"} })
		Eventually(func() map[string]string { return f.snapshot("sel", pb)().Status.Labels }).Should(Equal(map[string]string{"pool": "b"}))
		Eventually(metaLabels).Should(Equal(map[string]string{"pool": "b", fleetv1.ClusterLabel: "sel", "platform.example.com/owner": "ops"}))

		f.update("sel", func(mc *fleetv1.ManagedCluster) {
			mc.Spec.Mirror.Annotations = &fleetv1.KeyFilter{Include: []string{"example.com/"}}
		})
		_, err := member1.CoreV1().Nodes().Patch(ctx, pb, "application/merge-patch+json", []byte(`{"metadata":{"annotations":{"example.com/owner":"ops","other/x":"1"}}}`), metav1.PatchOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() map[string]string { return f.snapshot("sel", pb)().Status.Annotations }).Should(Equal(map[string]string{"example.com/owner": "ops"}))
		Eventually(f.condition("sel", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		Expect(f.get("sel").Status.ObservedGeneration).To(Equal(f.get("sel").Generation))
	})

	It("switches to new credentials within seconds when the Secret is rotated", func() {
		f := newFixture()
		r1, r2 := f.node(member1, "r1", nil), f.node(member1, "r2", nil)
		r3 := f.node(member2, "r3", nil)
		f.secret("rot-kubeconfig", member1Direct)
		f.cluster("rot")
		Eventually(f.nodeNames("rot")).Should(ConsistOf(r1, r2))

		secret := &corev1.Secret{}
		Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "rot-kubeconfig"}, secret)).To(Succeed())
		secret.Data["kubeconfig"] = member2Admin
		Expect(hub.Update(ctx, secret)).To(Succeed())
		Eventually(f.nodeNames("rot"), 10*time.Second).Should(Equal([]string{r3}))
		Eventually(f.condition("rot", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
	})

	It("keeps the snapshots through a member outage and catches up after it", func() {
		f := newFixture()
		o1, o2, o3 := f.node(member1, "o1", nil), f.node(member1, "o2", nil), f.node(member1, "o3", nil)
		f.secret("flaky-kubeconfig", member1ViaProxy)
		f.cluster("flaky")
		Eventually(f.nodeNames("flaky")).Should(ConsistOf(o1, o2, o3))
		Eventually(f.condition("flaky", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		untouched := f.snapshots("flaky")[o3].ResourceVersion

		member1Proxy.Down()
		proxyUp := false
		DeferCleanup(func() {
			if !proxyUp {
				Expect(member1Proxy.Up()).To(Succeed())
			}
		})
		Eventually(f.condition("flaky", fleetv1.ConditionConnected)).Should(Equal("Unknown/Unreachable"))
		Expect(f.condition("flaky", fleetv1.ConditionReady)()).To(Equal("False/Unreachable"))
		Expect(f.condition("flaky", fleetv1.ConditionReconciling)()).To(Equal("True/Unreachable"))
		Expect(f.kstatus("flaky")()).To(Equal(status.InProgressStatus))
		Consistently(f.nodeNames("flaky")).Should(ConsistOf(o1, o2, o3))

		By("changing the member while the operator cannot see it")
		Expect(member1.CoreV1().Nodes().Delete(ctx, o1, metav1.DeleteOptions{})).To(Succeed())
		Expect(framework.PatchLabel(ctx, member1, o2, "during", ptr.To("outage"))).To(Succeed())

		Expect(member1Proxy.Up()).To(Succeed())
		proxyUp = true
		Eventually(f.condition("flaky", fleetv1.ConditionConnected), 45*time.Second).Should(Equal("True/Healthy"))
		Eventually(f.nodeNames("flaky"), 45*time.Second).Should(ConsistOf(o2, o3))
		Eventually(func() map[string]string { return f.snapshot("flaky", o2)().Status.Labels }).Should(HaveKeyWithValue("during", "outage"))
		Expect(f.snapshots("flaky")[o3].ResourceVersion).To(Equal(untouched), "an unchanged node's snapshot was rewritten")
		Eventually(f.condition("flaky", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
	})

	It("keeps snapshots with hashed names through an operator restart, a spec change and a Secret rotation", func() {
		f := newFixture()
		// <cluster>.<node> is longer than a name may be: the snapshots get
		// hashed fallback names, which read like "<cluster>.<another node>".
		long := func(short string) string {
			name := f.nodeName(short)
			for len(name) < 250 {
				name += "." + strings.Repeat("z", 58)
			}
			return strings.TrimRight(name[:250], ".")
		}
		var created []string
		for _, short := range []string{"h1", "h2"} {
			n, err := framework.CreateNode(ctx, member1, framework.NewNode(long(short), map[string]string{specLabel: f.label, "kubernetes.io/hostname": short}))
			Expect(err).NotTo(HaveOccurred())
			created = append(created, n.Name)
		}
		f.secret("hashed-kubeconfig", member1Direct)
		f.cluster("hashed")
		Eventually(f.nodeNames("hashed")).Should(ConsistOf(created))
		Eventually(f.condition("hashed", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		for _, s := range f.snapshots("hashed") {
			Expect(s.Name).NotTo(Equal("hashed."+s.Spec.NodeName), "the test needs hashed names")
		}

		var list fleetv1.NodeSnapshotList
		Expect(hub.List(ctx, &list, client.InNamespace(f.ns))).To(Succeed())
		w, err := hubWatcher.Watch(ctx, &fleetv1.NodeSnapshotList{}, client.InNamespace(f.ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		Expect(err).NotTo(HaveOccurred())
		defer w.Stop()
		var events []string
		collect := func() {
			for {
				select {
				case e := <-w.ResultChan():
					s, _ := e.Object.(*fleetv1.NodeSnapshot)
					Expect(s).NotTo(BeNil(), "watch event %v", e)
					events = append(events, fmt.Sprintf("%s %s", e.Type, s.Name))
				default:
					return
				}
			}
		}
		writes := f.snapshotWrites()
		// snapshotLists counts the hub lists of the cluster's snapshots;
		// read before each step, since a new session may list at once.
		snapshotLists := func() int { return hubRequests.Count("GET", f.ns, "nodesnapshots") }
		// reseeded waits until a new session has listed the cluster's
		// snapshots again since lists and mirrored the member, then gives
		// a wrong vanished-node pass time to act.
		reseeded := func(lists int) {
			Eventually(func() int { return hubRequests.Count("GET", f.ns, "nodesnapshots") }).Should(BeNumerically(">", lists))
			Eventually(f.condition("hashed", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
			Consistently(f.nodeNames("hashed"), 2*time.Second).Should(ConsistOf(created))
			collect()
		}

		By("restarting the operator")
		lists := snapshotLists()
		restartOperator()
		reseeded(lists)
		By("changing the spec")
		lists = snapshotLists()
		f.update("hashed", func(mc *fleetv1.ManagedCluster) { mc.Spec.ResyncPeriod = &metav1.Duration{Duration: 2 * time.Hour} })
		reseeded(lists)
		By("rotating the Secret to other credentials for the same member")
		secret := &corev1.Secret{}
		Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "hashed-kubeconfig"}, secret)).To(Succeed())
		secret.Data["kubeconfig"] = member1ViaProxy
		lists = snapshotLists()
		Expect(hub.Update(ctx, secret)).To(Succeed())
		reseeded(lists)

		Expect(events).To(BeEmpty(), "snapshot events on the hub")
		Expect(f.snapshotWrites()).To(Equal(writes), "hub writes")
	})

	It("cuts what a node reports to the snapshot's limits and says what it cut", func() {
		f := newFixture()
		labels := map[string]string{}
		for i := range 300 {
			labels[fmt.Sprintf("example.com/l%03d", i)] = "v"
		}
		n := framework.NewNode(f.nodeName("big"), labels)
		n.Labels[specLabel] = f.label
		n.Status.Conditions[0].Message = strings.Repeat("kubelet says a lot. ", 500)
		n.Status.NodeInfo.KubeletVersion = "v1.37.2-" + strings.Repeat("x", 100)
		_, err := framework.CreateNode(ctx, member1, n)
		Expect(err).NotTo(HaveOccurred())
		f.secret("big-kubeconfig", member1Direct)
		f.cluster("big")
		Eventually(f.nodeNames("big")).Should(Equal([]string{n.Name}))
		st := f.snapshot("big", n.Name)().Status
		Expect(st.Labels).To(HaveLen(fleetv1.MaxSnapshotLabels))
		// Kept in key order: the first 256 of the 300 example.com/ labels.
		Expect(st.Labels).To(And(HaveKey("example.com/l255"), Not(HaveKey("example.com/l256"))))
		Expect(st.Conditions[0].Message).To(HaveLen(fleetv1.MaxConditionMessage))
		Expect(st.NodeInfo.KubeletVersion).To(HaveLen(fleetv1.MaxVersionLength))
		Expect(st.Columns.Version).To(Equal(st.NodeInfo.KubeletVersion))
		Expect(st.Truncated).To(ConsistOf("labels", "conditions[Ready].message", "nodeInfo.kubeletVersion"))
	})

	It("writes again a snapshot that someone else deleted", func() {
		f := newFixture()
		n1, n2 := f.node(member1, "s1", nil), f.node(member1, "s2", nil)
		f.secret("heal-kubeconfig", member1Direct)
		f.cluster("heal")
		Eventually(f.nodeNames("heal")).Should(ConsistOf(n1, n2))
		lost := f.snapshots("heal")[n1]
		Expect(hub.Delete(ctx, &lost)).To(Succeed())
		Eventually(func() string { return string(f.snapshot("heal", n1)().UID) }).ShouldNot(Or(BeEmpty(), Equal(string(lost.UID))))
		Expect(f.snapshot("heal", n1)().Status.Columns.Status).To(Equal("Ready"))
	})

	It("refreshes status from the session without reading the Secret again", func() {
		f := newFixture()
		n := f.node(member1, "st", nil)
		f.secret("quiet-kubeconfig", member1Direct)
		f.cluster("quiet")
		Eventually(f.condition("quiet", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
		reads := hubRequests.Count("GET", f.ns, "secrets")
		for _, s := range []corev1.ConditionStatus{corev1.ConditionFalse, corev1.ConditionTrue, corev1.ConditionFalse} {
			Expect(framework.SetReady(ctx, member1, n, s)).To(Succeed())
			want := int32(0)
			if s == corev1.ConditionTrue {
				want = 1
			}
			Eventually(func() int32 { return f.get("quiet").Status.Nodes.Ready }).Should(Equal(want))
		}
		Expect(hubRequests.Count("GET", f.ns, "secrets")).To(Equal(reads))
	})

	It("pauses: stops watching, keeps the snapshots and says so", func() {
		f := newFixture()
		n := f.node(member1, "p1", nil)
		f.secret("pz-kubeconfig", member1Direct)
		f.cluster("pz")
		Eventually(f.nodeNames("pz")).Should(Equal([]string{n}))

		f.update("pz", func(mc *fleetv1.ManagedCluster) { mc.Spec.Paused = true })
		Eventually(f.condition("pz", fleetv1.ConditionReady)).Should(Equal("True/Paused"))
		Expect(f.condition("pz", fleetv1.ConditionConnected)()).To(Equal("Unknown/Paused"))
		Expect(framework.PatchLabel(ctx, member1, n, "while", ptr.To("paused"))).To(Succeed())
		Consistently(func() map[string]string { return f.snapshot("pz", n)().Status.Labels }).ShouldNot(HaveKey("while"))
		Expect(f.nodeNames("pz")()).To(Equal([]string{n}))

		f.update("pz", func(mc *fleetv1.ManagedCluster) { mc.Spec.Paused = false })
		Eventually(func() map[string]string { return f.snapshot("pz", n)().Status.Labels }).Should(HaveKeyWithValue("while", "paused"))
		Eventually(f.condition("pz", fleetv1.ConditionReady)).Should(Equal("True/Mirroring"))
	})

	It("computes kstatus InProgress from birth until observed, Current when mirroring or paused, Failed when refused", func() {
		f := newFixture()
		f.node(member1, "k1", nil)
		f.secret("ks-kubeconfig", member1Direct)
		mc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": fleetv1.GroupVersion.String(), "kind": "ManagedCluster",
			"metadata": map[string]any{"namespace": f.ns, "name": "ks"},
			"spec": map[string]any{
				"kubeconfigSecretRef": map[string]any{"name": "ks-kubeconfig"},
				"nodeSelector":        map[string]any{"matchLabels": map[string]any{specLabel: f.label}},
			},
		}}
		Expect(hub.Create(ctx, mc)).To(Succeed())
		By("reading it as the create answered, before the operator can have seen it")
		Expect(kstatusOf(mc)).To(Equal(status.InProgressStatus), "status %v", mc.Object["status"])
		By("reading it right after")
		Expect(f.kstatus("ks")()).To(Equal(status.InProgressStatus))

		Eventually(f.kstatus("ks")).Should(Equal(status.CurrentStatus))
		Expect(f.condition("ks", fleetv1.ConditionReady)()).To(Equal("True/Mirroring"))

		By("pausing")
		f.update("ks", func(mc *fleetv1.ManagedCluster) { mc.Spec.Paused = true })
		Eventually(f.condition("ks", fleetv1.ConditionReady)).Should(Equal("True/Paused"))
		Expect(f.kstatus("ks")()).To(Equal(status.CurrentStatus))

		By("resuming with credentials the member refuses")
		secret := &corev1.Secret{}
		Expect(hub.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "ks-kubeconfig"}, secret)).To(Succeed())
		secret.Data["kubeconfig"] = member1NoRBAC
		Expect(hub.Update(ctx, secret)).To(Succeed())
		f.update("ks", func(mc *fleetv1.ManagedCluster) { mc.Spec.Paused = false })
		Eventually(f.kstatus("ks")).Should(Equal(status.FailedStatus))
		Expect(f.condition("ks", fleetv1.ConditionStalled)()).To(Equal("True/Forbidden"))

		By("connecting to a member that never answers")
		silent, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(silent.Close)
		hanging, err := framework.WithServer(member1Direct, "https://"+silent.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		f.secret("hang-kubeconfig", hanging)
		f.cluster("hang")
		Eventually(f.condition("hang", fleetv1.ConditionConnected)).Should(Equal("Unknown/Connecting"))
		Expect(f.kstatus("hang")()).To(Equal(status.InProgressStatus))
	})

	It("removes every snapshot and then the finalizer when the ManagedCluster is deleted", func() {
		f := newFixture()
		for i := range 5 {
			f.node(member1, fmt.Sprintf("d%d", i), nil)
		}
		f.secret("gone-kubeconfig", member1Direct)
		mc := f.cluster("gone")
		Eventually(f.nodeNames("gone")).Should(HaveLen(5))

		Expect(hub.Delete(ctx, mc)).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(hub.Get(ctx, client.ObjectKeyFromObject(mc), &fleetv1.ManagedCluster{}))
		}).Should(BeTrue())
		Expect(f.nodeNames("gone")()).To(BeEmpty())
		Expect(metric("nodemirror_nodes_mirrored", keyOf(f, "gone"))).To(BeZero())
	})
})
