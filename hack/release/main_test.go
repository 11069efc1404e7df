package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodemirror/nodemirror/internal/install"
)

var testdata = filepath.Join("..", "..", "internal", "install", "testdata", "kustomize", "overlay")

const (
	digestOp = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digestSc = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// writeImagesJSON writes an images.json as the images command would.
func writeImagesJSON(t *testing.T) string {
	t.Helper()
	m := install.Manifest{Version: "v0.4.0", Created: time.Unix(1700000000, 0).UTC()}
	for i, img := range install.Images {
		d := []string{digestOp, digestSc}[i]
		repo := "example.com/fleet/" + img.Binary
		m.Images = append(m.Images, install.BuiltImage{
			Name: img.Name, Repository: repo, Tag: "v0.4.0", Digest: d, Reference: repo + "@" + d,
			ConfigImage: img.ConfigImage(), Layout: "images/" + img.Name,
		})
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "images.json")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestInstallerPinsDigests(t *testing.T) {
	out := filepath.Join(t.TempDir(), "dist", "install.yaml")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"installer", "--kustomize", testdata, "--images", writeImagesJSON(t), "--out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "# nodemirror v0.4.0: rendered from ") ||
		!strings.Contains(string(data), "# example.com/fleet/nodemirror-operator@"+digestOp+" is example.com/fleet/nodemirror-operator:v0.4.0\n") {
		t.Errorf("header:\n%s", data)
	}
	got, err := install.ContainerImages(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"example.com/fleet/nodemirror-operator@" + digestOp,
		"example.com/fleet/nodemirror-sidecar@" + digestSc,
		"registry.example:5000/tools/busybox:1.36",
	}
	if !slices.Equal(got, want) {
		t.Errorf("images %q, want %q", got, want)
	}
}

func TestInstallerByTag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"installer", "--kustomize", testdata, "--out", "-",
		"--image", "operator=example.com/op:v1", "--image", "sidecar=example.com/sc:v1"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	got, err := install.ContainerImages(stdout.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"example.com/op:v1", "example.com/sc:v1", "registry.example:5000/tools/busybox:1.36"}; !slices.Equal(got, want) {
		t.Errorf("images %q, want %q", got, want)
	}
}

// A kustomization that does not run one of the release's images makes no
// install manifest: it would not run what the release built.
func TestInstallerRefusesUnpinnedManifest(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources:\n- pod.yaml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: ghcr.io/nodemirror/nodemirror-operator:latest\n"
	if err := os.WriteFile(filepath.Join(dir, "pod.yaml"), []byte(pod), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "install.yaml")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"installer", "--kustomize", dir, "--images", writeImagesJSON(t), "--out", out}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "ghcr.io/nodemirror/nodemirror-sidecar") {
		t.Errorf("error %v, want one naming the sidecar image", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("an install manifest was written anyway")
	}
}

func TestArguments(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"deploy"},
		{"installer", "--kustomize", testdata, "--out", "-"},           // nothing to pin
		{"installer", "--image", "ui=example.com/ui:v1", "--out", "-"}, // no such image
		{"installer", "--image", "operator", "--out", "-"},             // no reference
		{"installer", "--images", filepath.Join(t.TempDir(), "none.json")},
		{"images", "extra"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

func TestSourceDate(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if got, err := sourceDate("."); err != nil || !got.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("sourceDate = %s, %v", got, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := sourceDate("."); err == nil {
		t.Error("SOURCE_DATE_EPOCH=yesterday: no error")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if _, err := sourceDate(t.TempDir()); err != nil {
		t.Errorf("outside a repository: %v", err)
	}
}
