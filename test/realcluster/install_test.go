package realcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"

	"github.com/nodemirror/nodemirror/internal/install"
	"github.com/nodemirror/nodemirror/test/framework"
)

const systemNamespace = "nodemirror-system"

// release is one `make release` output.
type release struct {
	version  string
	dir      string
	manifest []byte
	images   *install.Manifest
}

// makeRelease runs make release as a user would, into dir/<version>/dist,
// and imports its images into the cluster's runtime (nothing can be pulled).
func makeRelease(t *testing.T, dir, version string) release {
	t.Helper()
	dist := filepath.Join(dir, version, "dist")
	start := time.Now()
	cmd := exec.Command("make", "release", "VERSION="+version, "DIST="+dist)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	t.Logf("make release VERSION=%s took %s", version, time.Since(start).Round(time.Second))
	r := release{version: version, dir: dist}
	if r.manifest, err = os.ReadFile(filepath.Join(dist, "install.yaml")); err != nil {
		t.Fatal(err)
	}
	if r.images, err = install.ReadManifest(filepath.Join(dist, install.ManifestFile)); err != nil {
		t.Fatal(err)
	}
	for _, img := range r.images.Images {
		if !bytes.Contains(r.manifest, []byte(img.Reference)) {
			t.Fatalf("install.yaml does not pin %s", img.Reference)
		}
		if err := real.ImportLayout(context.Background(), filepath.Join(dist, img.Layout), img.Repository+":"+img.Tag, img.Reference); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// deployments reads the Deployments of a rendered manifest by name.
func deployments(t *testing.T, manifest []byte) map[string]appsv1.Deployment {
	t.Helper()
	out := map[string]appsv1.Deployment{}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		if err := json.Unmarshal(raw, &meta); err != nil || meta.Kind != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		out[d.Name] = d
	}
}

// runningPods lists the Ready pods of a Deployment, failing on none.
func runningPods(t *testing.T, ns string, d appsv1.Deployment) []corev1.Pod {
	t.Helper()
	list, err := real.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(d.Spec.Selector.MatchLabels).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && podReady(&p) {
			pods = append(pods, p)
		}
	}
	if len(pods) == 0 {
		t.Fatalf("no Ready pod of Deployment %s/%s", ns, d.Name)
	}
	return pods
}

// checkPodsAsShipped: the pods run with exactly the securityContext the
// manifest ships, as the images' nonroot user, on the pinned images.
func checkPodsAsShipped(t *testing.T, ns string, d appsv1.Deployment) {
	t.Helper()
	want := d.Spec.Template.Spec
	for _, p := range runningPods(t, ns, d) {
		if !reflect.DeepEqual(p.Spec.SecurityContext, want.SecurityContext) {
			t.Errorf("pod %s securityContext %+v, shipped %+v", p.Name, p.Spec.SecurityContext, want.SecurityContext)
		}
		for i, c := range p.Spec.Containers {
			if !reflect.DeepEqual(c.SecurityContext, want.Containers[i].SecurityContext) {
				t.Errorf("pod %s container %s securityContext %+v, shipped %+v", p.Name, c.Name, c.SecurityContext, want.Containers[i].SecurityContext)
			}
			if c.Image != want.Containers[i].Image {
				t.Errorf("pod %s runs %s, the manifest pins %s", p.Name, c.Image, want.Containers[i].Image)
			}
		}
		for _, cs := range p.Status.ContainerStatuses {
			if !cs.Ready || cs.State.Running == nil {
				t.Errorf("pod %s container %s not running and ready: %+v", p.Name, cs.Name, cs.State)
			}
		}
	}
}

// processUIDs reads, from the host's /proc, the real and effective user of
// every process running the named binary: what the kernel, not the pod
// spec, says the containers run as.
func processUIDs(t *testing.T, binary string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || filepath.Base(exe) != binary {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Uid:") {
				f := strings.Fields(line)
				uids = append(uids, f[1]+"/"+f[2])
			}
		}
	}
	return uids
}

// serviceAddr is a Service port's ClusterIP:port, reached from the host
// through kube-proxy's rules.
func serviceAddr(t *testing.T, ns, name string) string {
	t.Helper()
	svc, err := real.Client.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
}

// serviceAccountToken makes a ServiceAccount bound to clusterRole (in ns
// with a RoleBinding, or cluster-wide when ns is empty for the binding)
// and returns a short-lived token for it.
func serviceAccountToken(t *testing.T, saNamespace, name, clusterRole, bindingNamespace string) string {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: saNamespace, Name: name}}
	if _, err := real.Client.CoreV1().ServiceAccounts(saNamespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: saNamespace, Name: name}}
	ref := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole}
	var err error
	if bindingNamespace == "" {
		_, err = real.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: saNamespace + "-" + name}, Subjects: subject, RoleRef: ref}, metav1.CreateOptions{})
	} else {
		_, err = real.Client.RbacV1().RoleBindings(bindingNamespace).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: bindingNamespace, Name: saNamespace + "-" + name}, Subjects: subject, RoleRef: ref}, metav1.CreateOptions{})
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := real.Client.CoreV1().ServiceAccounts(saNamespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// leader is the holder of the operator's leader-election Lease.
func leader(ctx context.Context, ns string) (string, error) {
	l, err := real.Client.CoordinationV1().Leases(ns).Get(ctx, "nodemirror-operator.fleet.nodemirror.io", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return ptr.Deref(l.Spec.HolderIdentity, ""), nil
}

// checkOperatorServes: an operator pod in ns holds the leader Lease, and
// /metrics over HTTPS through its Service is behind the hub's authn/authz:
// 401 without a token, 200 with a token bound to nodemirror-metrics-reader.
func checkOperatorServes(t *testing.T, ns string) {
	t.Helper()
	waitFor(t, time.Minute, "an operator pod in "+ns+" to hold the leader Lease", func(ctx context.Context) (bool, error) {
		holder, err := leader(ctx, ns)
		return err == nil && strings.HasPrefix(holder, "nodemirror-operator-"), nil
	})
	// kube-proxy programs the Service a moment after the rollout: until
	// then a connection is refused, which is not an answer.
	addr := serviceAddr(t, ns, "nodemirror-operator-metrics")
	waitFor(t, 30*time.Second, "metrics without a token through the Service in "+ns+" refused with 401", func(ctx context.Context) (bool, error) {
		code, _, err := framework.Scrape(addr, "")
		if err != nil {
			return false, nil
		}
		if code != http.StatusUnauthorized {
			return false, fmt.Errorf("answered %d, want 401", code)
		}
		return true, nil
	})
	reader := serviceAccountToken(t, ns, "metrics-scraper", "nodemirror-metrics-reader", "")
	waitFor(t, 30*time.Second, "metrics with a metrics-reader token through the Service in "+ns, func(ctx context.Context) (bool, error) {
		code, body, err := framework.Scrape(addr, reader)
		return err == nil && code == http.StatusOK && strings.Contains(body, "controller_runtime_"), nil
	})
}
