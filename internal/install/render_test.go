package install

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const (
	testOperator = "ghcr.io/nodemirror/nodemirror-operator"
	testSidecar  = "ghcr.io/nodemirror/nodemirror-sidecar"
	digestA      = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB      = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// decodeObjects parses a multi-document manifest into objects, failing the
// test on anything that is not one.
func decodeObjects(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := d.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered manifest does not parse: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if u.GetKind() == "" || u.GetAPIVersion() == "" || u.GetName() == "" {
			t.Fatalf("rendered manifest holds a document that is not an object: %v", u.Object)
		}
		objs = append(objs, u)
	}
	return objs
}

func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestRenderPinsByDigest(t *testing.T) {
	dir := filepath.Join("testdata", "kustomize", "overlay")
	before := readTree(t, filepath.Join("testdata", "kustomize"))
	out, err := Render(dir, map[string]string{
		testOperator: "registry.example:5000/fleet/nodemirror-operator@" + digestA,
		testSidecar:  testSidecar + "@" + digestB,
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := readTree(t, filepath.Join("testdata", "kustomize")); !mapsEqual(before, after) {
		t.Error("Render changed files of the kustomization")
	}
	objs := decodeObjects(t, out)
	if len(objs) != 5 {
		t.Fatalf("got %d objects, want 5:\n%s", len(objs), out)
	}
	// kustomize's legacy order: the Namespace comes first although the
	// sources list it last, so that kubectl apply -f creates it first.
	if objs[0].GetKind() != "Namespace" || objs[0].GetName() != "render-test" {
		t.Errorf("first object is %s %s, want the Namespace render-test", objs[0].GetKind(), objs[0].GetName())
	}
	for _, o := range objs[1:] {
		if o.GetNamespace() != "render-test" {
			t.Errorf("%s %s is in namespace %q, want render-test", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}

	images, err := ContainerImages(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"ghcr.io/nodemirror/nodemirror-sidecar@" + digestB,
		"registry.example:5000/fleet/nodemirror-operator@" + digestA, // containers, init containers, the CronJob's (its old digest replaced)
		"registry.example:5000/tools/busybox:1.36",                   // not mapped: untouched
	}
	if !slices.Equal(images, want) {
		t.Errorf("container images:\n got %q\nwant %q", images, want)
	}
	// Only image fields change: a ConfigMap value that looks like an image
	// does not.
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" {
			if v, _, _ := unstructured.NestedString(o.Object, "data", "image"); v != testOperator+":latest" {
				t.Errorf("ConfigMap data.image = %q, want it untouched", v)
			}
		}
	}
}

func TestRenderTagForms(t *testing.T) {
	dir := filepath.Join("testdata", "kustomize", "overlay")
	for _, tc := range []struct{ to, want string }{
		{"example.com/op:v1.2.3", "example.com/op:v1.2.3"},
		{"example.com/op:v1.2.3@" + digestA, "example.com/op:v1.2.3@" + digestA},
		{testOperator + "@" + digestA, testOperator + "@" + digestA},
		{"localhost:5000/op:dev", "localhost:5000/op:dev"},
	} {
		out, err := Render(dir, map[string]string{testOperator: tc.to})
		if err != nil {
			t.Fatalf("%s: %v", tc.to, err)
		}
		images, err := ContainerImages(out)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{testSidecar, tc.want, "registry.example:5000/tools/busybox:1.36"}
		slices.Sort(want)
		if !slices.Equal(images, want) {
			t.Errorf("%s: container images %q, want %q", tc.to, images, want)
		}
	}
}

func TestRenderWithoutImages(t *testing.T) {
	out, err := Render(filepath.Join("testdata", "kustomize", "overlay"), nil)
	if err != nil {
		t.Fatal(err)
	}
	images, err := ContainerImages(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		testOperator + ":latest",
		testOperator + "@sha256:0000000000000000000000000000000000000000000000000000000000000000",
		testSidecar,
		"registry.example:5000/tools/busybox:1.36",
	}
	if !slices.Equal(images, want) {
		t.Errorf("container images %q, want %q", images, want)
	}
}

func TestRenderErrors(t *testing.T) {
	dir := filepath.Join("testdata", "kustomize", "overlay")
	for name, images := range map[string]map[string]string{
		"name with tag":    {testOperator + ":latest": testOperator + "@" + digestA},
		"name with digest": {testOperator + "@" + digestA: testOperator + "@" + digestA},
		"no tag or digest": {testOperator: "example.com/op"},
		"short digest":     {testOperator: "example.com/op@sha256:abc"},
		"other algorithm":  {testOperator: "example.com/op@md5:" + strings.Repeat("a", 64)},
		"empty target":     {testOperator: ""},
		"empty name":       {"": "example.com/op:v1"},
	} {
		if _, err := Render(dir, images); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Render(filepath.Join("testdata", "no-such-dir"), nil); err == nil {
		t.Error("rendering a missing directory: no error")
	}
}

// TestRenderConfigDefault renders the real hub installation with both
// release images mapped: it parses into objects, and neither image is left
// without its digest.
func TestRenderConfigDefault(t *testing.T) {
	images := map[string]string{}
	for i, img := range Images {
		images[img.ConfigImage()] = "example.com/fleet/" + img.Binary + "@" + []string{digestA, digestB}[i%2]
	}
	out, err := Render(filepath.Join("..", "..", "config", "default"), images)
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeObjects(t, out)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	for _, k := range []string{"Namespace", "CustomResourceDefinition", "Deployment", "ServiceAccount"} {
		if kinds[k] == 0 {
			t.Errorf("config/default renders no %s (kinds: %v)", k, kinds)
		}
	}
	got, err := ContainerImages(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		t.Fatal("config/default has no container image")
	}
	for _, ref := range got {
		for from := range images {
			if ref == from || strings.HasPrefix(ref, from+":") || strings.HasPrefix(ref, from+"@") {
				t.Errorf("container image %s is left as written in config/", ref)
			}
		}
	}
	t.Logf("config/default: %d objects, container images %q", len(objs), got)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
