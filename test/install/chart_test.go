package install

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/nodemirror/nodemirror/internal/install"
	"github.com/nodemirror/nodemirror/test/framework"
)

// chart is the Helm chart, relative to the repository root.
const chart = "charts/nodemirror"

// everything turns on every optional part of the chart.
var everything = []string{
	"--set", "metrics.serviceMonitor.enabled=true",
	"--set", "metrics.prometheusRule.enabled=true",
	"--set", "networkPolicy.enabled=true",
}

// helm runs the Helm CLI built from the version pinned in hack/helm.
func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(framework.RepoRoot(), "bin", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("no Helm CLI at %s: run make helm (or set HELM): %v", bin, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = framework.RepoRoot()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	return out.Bytes()
}

func helmTemplate(t *testing.T, namespace string, args ...string) []byte {
	return helm(t, append([]string{"template", "nodemirror", chart, "--namespace", namespace}, args...)...)
}

// kustomize renders a kustomization directory with the project's kubectl.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl"), "kustomize", dir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, errOut.String())
	}
	return out.Bytes()
}

// renderRelease renders config/default as make build-installer does, both
// images pinned by a digest.
func renderRelease(t *testing.T) []byte {
	t.Helper()
	digest := "@sha256:" + strings.Repeat("0", 64)
	out, err := install.Render(filepath.Join(framework.RepoRoot(), "config", "default"), map[string]string{
		"ghcr.io/nodemirror/nodemirror-operator": "ghcr.io/nodemirror/nodemirror-operator" + digest,
		"ghcr.io/nodemirror/nodemirror-sidecar":  "ghcr.io/nodemirror/nodemirror-sidecar" + digest,
	})
	if err != nil {
		t.Fatal(err)
	}
	images, err := install.ContainerImages(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range images {
		if !strings.HasSuffix(img, digest) {
			t.Errorf("the release manifest runs %s, not pinned by digest", img)
		}
	}
	return out
}

func TestChartLints(t *testing.T) {
	out := helm(t, append([]string{"lint", "--strict", chart}, everything...)...)
	t.Logf("%s", out)
	helm(t, "lint", "--strict", chart, "--set", "sidecar.enabled=false")
	helm(t, "lint", "--strict", chart, "--set", "operator.sharding.enabled=true,operator.replicas=3")
	helm(t, "lint", "--strict", chart, "--set", "sidecar.ingress.enabled=true,sidecar.ingress.tlsSecretName=tls")
}

// TestChartMatchesKustomize keeps the chart and config/ from drifting: with
// its default values the chart renders exactly the objects of
// config/default (but the Namespace, which Helm leaves to --create-namespace,
// and the labels Helm adds), and with every option on, those of
// config/default with ../prometheus and ../network-policy; sharded, those
// of config/sharded.
func TestChartMatchesKustomize(t *testing.T) {
	root := framework.RepoRoot()
	tags := []string{"--set", "image.operator.tag=latest", "--set", "image.sidecar.tag=latest", "--include-crds"}
	t.Run("defaults", func(t *testing.T) {
		compare(t, kustomize(t, filepath.Join(root, "config", "default")), helmTemplate(t, "nodemirror-system", tags...))
	})
	t.Run("everything", func(t *testing.T) {
		dir := t.TempDir()
		rel, err := filepath.Rel(dir, filepath.Join(root, "config"))
		if err != nil {
			t.Fatal(err)
		}
		// config/default with its two optional parts uncommented.
		def, err := os.ReadFile(filepath.Join(root, "config", "default", "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		k := strings.ReplaceAll(string(def), "#- ../", "- ../")
		k = strings.ReplaceAll(k, "- ../", "- "+rel+"/")
		if !strings.Contains(k, "/prometheus") || !strings.Contains(k, "/network-policy") {
			t.Fatalf("config/default no longer names ../prometheus and ../network-policy:\n%s", k)
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
		compare(t, kustomize(t, dir), helmTemplate(t, "nodemirror-system", append(tags, everything...)...))
	})
	t.Run("sharded", func(t *testing.T) {
		compare(t, kustomize(t, filepath.Join(root, "config", "sharded")),
			helmTemplate(t, "nodemirror-system", append(tags, "--set", "operator.sharding.enabled=true", "--set", "operator.replicas=3")...))
	})
	t.Run("values", func(t *testing.T) {
		out := string(helmTemplate(t, "ops", "--set", "sidecar.enabled=false", "--set", "operator.replicas=3",
			"--set", "operator.extraArgs={--member-deny-cidrs=10.0.0.0/8}", "--set", "image.operator.digest=sha256:"+strings.Repeat("a", 64)))
		for _, want := range []string{"replicas: 3", `- "--member-deny-cidrs=10.0.0.0/8"`, "image: ghcr.io/nodemirror/nodemirror-operator@sha256:aaaa"} {
			if !strings.Contains(out, want) {
				t.Errorf("rendered chart lacks %q", want)
			}
		}
		if strings.Contains(out, "nodemirror-sidecar") {
			t.Errorf("sidecar.enabled=false still renders sidecar objects")
		}
	})
}

// TestChartCRDsAreTheGeneratedOnes: make manifests copies the CRDs into
// the chart; a stale copy fails here as well as in verify-generated.
func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	root := framework.RepoRoot()
	bases, _ := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	copies, _ := filepath.Glob(filepath.Join(root, chart, "crds", "*.yaml"))
	if len(bases) == 0 || len(bases) != len(copies) {
		t.Fatalf("config/crd/bases has %d CRDs, the chart %d", len(bases), len(copies))
	}
	for _, b := range bases {
		want, _ := os.ReadFile(b)
		got, err := os.ReadFile(filepath.Join(root, chart, "crds", filepath.Base(b)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: the chart's copy differs (run make manifests): %v", filepath.Base(b), err)
		}
	}
}

// helmLabels are the labels the chart adds to what config/ has.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}

func compare(t *testing.T, fromKustomize, fromHelm []byte) {
	t.Helper()
	want, got := index(t, fromKustomize, true), index(t, fromHelm, false)
	for _, key := range sortedKeys(want) {
		g, ok := got[key]
		if !ok {
			t.Errorf("the chart lacks %s", key)
			continue
		}
		if !equality.Semantic.DeepEqual(want[key].Object, g.Object) {
			w, _ := yaml.Marshal(want[key].Object)
			h, _ := yaml.Marshal(g.Object)
			t.Errorf("%s differs\nconfig/:\n%s\nchart:\n%s", key, w, h)
		}
	}
	for _, key := range sortedKeys(got) {
		if _, ok := want[key]; !ok {
			t.Errorf("the chart has %s, config/ does not", key)
		}
	}
}

func index(t *testing.T, manifest []byte, fromKustomize bool) map[string]*unstructured.Unstructured {
	out := map[string]*unstructured.Unstructured{}
	for _, obj := range decodeAll(t, manifest) {
		if fromKustomize && obj.GetKind() == "Namespace" {
			continue
		}
		labels := obj.GetLabels()
		if obj.GetKind() == "CustomResourceDefinition" {
			// The chart's crds/ are controller-gen's files as they are.
			delete(labels, "app.kubernetes.io/name")
		}
		for _, l := range helmLabels {
			delete(labels, l)
		}
		if len(labels) == 0 {
			unstructured.RemoveNestedField(obj.Object, "metadata", "labels")
		} else {
			obj.SetLabels(labels)
		}
		key := obj.GetKind() + " " + obj.GetNamespace() + "/" + obj.GetName()
		if _, dup := out[key]; dup {
			t.Fatalf("%s twice", key)
		}
		out[key] = obj
	}
	return out
}

func sortedKeys(m map[string]*unstructured.Unstructured) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
