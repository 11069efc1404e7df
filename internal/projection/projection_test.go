package projection

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	fleetv1 "github.com/nodemirror/nodemirror/api/v1alpha1"
)

func testNode() *corev1.Node {
	t0 := metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: "worker-1", ResourceVersion: "100", CreationTimestamp: t0,
			Labels: map[string]string{
				"kubernetes.io/hostname":         "worker-1",
				"node-role.kubernetes.io/worker": "",
				"node-role.kubernetes.io/infra":  "",
				"topology.kubernetes.io/zone":    "eu-1a",
			},
			Annotations:   map[string]string{"node.alpha.kubernetes.io/ttl": "0", "example.com/owner": "team-a"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
		},
		Spec: corev1.NodeSpec{
			Unschedulable: true, PodCIDR: "10.0.0.0/24", ProviderID: "aws:///i-1",
			Taints: []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}},
		},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("16Gi")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3800m"), corev1.ResourceMemory: resource.MustParse("15Gi")},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status",
				LastHeartbeatTime: metav1.NewTime(t0.Add(time.Minute)), LastTransitionTime: t0,
			}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: "worker-1"}, {Type: corev1.NodeInternalIP, Address: "10.1.2.3"}},
			NodeInfo:  corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OSImage: "Debian 12", KernelVersion: "6.1", ContainerRuntimeVersion: "containerd://2.1", Architecture: "amd64", OperatingSystem: "linux", MachineID: "abc"},
			Images:    []corev1.ContainerImage{{Names: []string{"registry/image:tag"}, SizeBytes: 1 << 20}},
		},
	}
}

func TestProject(t *testing.T) {
	st := Project(testNode(), NewFilter(fleetv1.MirrorSpec{}))
	if got, want := strings.Join(st.Roles, ","), "infra,worker"; got != want {
		t.Errorf("Roles = %q, want %q", got, want)
	}
	want := fleetv1.NodeColumns{
		Status: "Ready,SchedulingDisabled", Roles: "infra,worker", Version: "v1.37.2",
		InternalIP: "10.1.2.3", ExternalIP: "<none>", OSImage: "Debian 12", KernelVersion: "6.1 (amd64)", ContainerRuntime: "containerd://2.1",
	}
	if st.Columns != want {
		t.Errorf("Columns = %+v, want %+v", st.Columns, want)
	}
	if len(st.Labels) != 4 {
		t.Errorf("default filter keeps every label, got %v", st.Labels)
	}
	if st.Annotations != nil {
		t.Errorf("default filter keeps no annotation, got %v", st.Annotations)
	}
	if st.NodeInfo.KubeletVersion != "v1.37.2" || st.SourceResourceVersion != "100" || len(st.Taints) != 1 {
		t.Errorf("unexpected projection %+v", st)
	}
}

// The cells kubectl prints are checked against kubectl itself in
// test/e2e; these are the rules in brief.
func TestColumnsFollowKubectl(t *testing.T) {
	for _, tc := range []struct {
		ready         corev1.ConditionStatus
		unschedulable bool
		want          string
	}{
		{corev1.ConditionTrue, false, "Ready"},
		{corev1.ConditionFalse, false, "NotReady"},
		{corev1.ConditionUnknown, false, "NotReady"},
		{corev1.ConditionUnknown, true, "NotReady,SchedulingDisabled"},
		{"", false, "Unknown"},
		{"", true, "Unknown,SchedulingDisabled"},
	} {
		if got := Status(tc.ready, tc.unschedulable); got != tc.want {
			t.Errorf("Status(%q, %v) = %q, want %q", tc.ready, tc.unschedulable, got, tc.want)
		}
	}
	bare := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LegacyRoleLabel: "infra", RoleLabelPrefix + "infra": ""}}}
	want := fleetv1.NodeColumns{Status: "Unknown", Roles: "infra", InternalIP: "<none>", ExternalIP: "<none>", OSImage: "<unknown>", KernelVersion: "<unknown>", ContainerRuntime: "<unknown>"}
	if got := Columns(bare); got != want {
		t.Errorf("Columns of a bare node = %+v, want %+v", got, want)
	}
}

func TestFilter(t *testing.T) {
	f := NewFilter(fleetv1.MirrorSpec{
		Labels:      &fleetv1.KeyFilter{Include: []string{"topology.kubernetes.io/", "kubernetes.io/"}, Exclude: []string{"kubernetes.io/hostname"}},
		Annotations: &fleetv1.KeyFilter{Include: []string{"example.com/"}},
	})
	st := Project(testNode(), f)
	if len(st.Labels) != 1 || st.Labels["topology.kubernetes.io/zone"] != "eu-1a" {
		t.Errorf("Labels = %v, want only the zone", st.Labels)
	}
	if len(st.Roles) != 2 {
		t.Errorf("roles come from role labels even when those are not mirrored, got %v", st.Roles)
	}
	if len(st.Annotations) != 1 || st.Annotations["example.com/owner"] != "team-a" {
		t.Errorf("Annotations = %v", st.Annotations)
	}
	if !NewFilter(fleetv1.MirrorSpec{Annotations: &fleetv1.KeyFilter{Include: []string{""}}}).KeepAnnotation("any") {
		t.Error("an empty include prefix keeps every key")
	}
	if NewFilter(fleetv1.MirrorSpec{Labels: &fleetv1.KeyFilter{Exclude: []string{"a/"}}}).KeepLabel("a/b") {
		t.Error("exclusion wins")
	}
}

// Heartbeats and resourceVersion bumps must not change the digest; anything
// mirrored must.
func TestDigest(t *testing.T) {
	f := NewFilter(fleetv1.MirrorSpec{})
	base := Digest(ptr(Project(testNode(), f)))

	hb := testNode()
	hb.ResourceVersion = "101"
	hb.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(time.Now())
	hb.Status.Images = nil
	hb.Annotations["node.alpha.kubernetes.io/ttl"] = "30"
	if got := Digest(ptr(Project(hb, f))); got != base {
		t.Errorf("heartbeat changed the digest")
	}

	for name, change := range map[string]func(n *corev1.Node){
		"label":       func(n *corev1.Node) { n.Labels["x"] = "y" },
		"cordon":      func(n *corev1.Node) { n.Spec.Unschedulable = false },
		"taint":       func(n *corev1.Node) { n.Spec.Taints = nil },
		"ready":       func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse },
		"allocatable": func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("3") },
		"kubelet":     func(n *corev1.Node) { n.Status.NodeInfo.KubeletVersion = "v1.38.0" },
	} {
		n := testNode()
		change(n)
		if Digest(ptr(Project(n, f))) == base {
			t.Errorf("%s change kept the digest", name)
		}
	}
}

func TestSnapshotName(t *testing.T) {
	if got := SnapshotName("prod-eu", "worker-1"); got != "prod-eu.worker-1" {
		t.Errorf("SnapshotName = %q", got)
	}
	longNode := strings.Repeat("a", 200) + "." + strings.Repeat("b", 52)
	a := SnapshotName("cluster-a", longNode)
	b := SnapshotName("cluster-b", longNode)
	c := SnapshotName("cluster-a", longNode[:len(longNode)-1]+"c")
	for _, n := range []string{a, b, c} {
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("%q is not a valid name: %v", n, errs)
		}
	}
	if a == b || a == c {
		t.Errorf("hashed names collide: %q %q %q", a, b, c)
	}
	if a != SnapshotName("cluster-a", longNode) {
		t.Error("hashed name is not stable")
	}
	// A cut that lands right after a '.' must not leave ".-".
	dotted := strings.Repeat("x", 223) + "." + strings.Repeat("y", 20)
	name := SnapshotName("cluster-abc", dotted)
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 || strings.Contains(name, ".-") {
		t.Errorf("invalid name %q: %v", name, errs)
	}
}

func ptr[T any](v T) *T { return &v }

// A member is whatever server a tenant chose: nothing it reports may make
// a snapshot grow without bound.
func TestProjectCapsAHostileNode(t *testing.T) {
	n := testNode()
	long := strings.Repeat("x", 100000)
	n.Labels[long] = "v"
	n.Labels["ok"] = long
	for i := range 100 {
		n.Labels[fmt.Sprintf("node-role.kubernetes.io/r%03d", i)] = ""
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: fmt.Sprint("t", i), Effect: corev1.TaintEffectNoSchedule})
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: long})
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeConditionType(fmt.Sprint("C", i)), Status: corev1.ConditionTrue, Message: long})
	}
	n.Status.Capacity = corev1.ResourceList{}
	for i := range 1000 {
		n.Status.Capacity[corev1.ResourceName(fmt.Sprintf("example.com/r%04d", i))] = resource.MustParse("1")
	}
	n.Status.Capacity[corev1.ResourceCPU] = resource.MustParse("4")
	n.Status.NodeInfo.OSImage = long
	n.ResourceVersion = long

	st := Project(n, NewFilter(fleetv1.MirrorSpec{}))
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 128<<10 {
		t.Errorf("a hostile node projects to %d KiB", len(b)>>10)
	}
	if _, ok := st.Labels[long]; ok || st.Labels["ok"] != "" {
		t.Error("an invalid label key or value was kept")
	}
	if len(st.Taints) != MaxTaints || len(st.Addresses) != 2 || len(st.Conditions) != MaxConditions || len(st.Roles) != MaxRoles {
		t.Errorf("taints %d, addresses %d, conditions %d, roles %d", len(st.Taints), len(st.Addresses), len(st.Conditions), len(st.Roles))
	}
	if len(st.Capacity) != MaxResources || st.Capacity.Cpu().String() != "4" {
		t.Errorf("capacity: %d resources, cpu %v; want %d with cpu kept", len(st.Capacity), st.Capacity.Cpu(), MaxResources)
	}
	for _, want := range []string{"labels", "taints", "addresses", "conditions", "conditions[C0].message", "more", "roles", "capacity", "nodeInfo.osImage", "sourceResourceVersion"} {
		if !slices.Contains(st.Truncated, want) {
			t.Errorf("truncated = %v, lacks %q", st.Truncated, want)
		}
	}
	if len(st.Truncated) > 32 {
		t.Errorf("truncated has %d entries", len(st.Truncated))
	}
	if Digest(&st) != Digest(ptrTo(Project(n, NewFilter(fleetv1.MirrorSpec{})))) {
		t.Error("capping is not deterministic")
	}
}

func ptrTo[T any](v T) *T { return &v }
