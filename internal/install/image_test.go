package install

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// testBuildOptions are the inputs of the test's release build. Building
// twice with them must give the same digests.
func testBuildOptions(out string) BuildOptions {
	return BuildOptions{
		ModuleDir: filepath.Join("..", ".."),
		Out:       out,
		Version:   "v1.2.3-test",
		Commit:    "0123456789abcdef0123456789abcdef01234567",
		Created:   time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		Registry:  "registry.example:5000/fleet",
		Refs:      map[string]string{"sidecar": "registry.example:5000/other/sidecar:edge"},
		Licenses:  "Apache-2.0",
	}
}

// layerFile is a file of a layer: its header and content.
type layerFile struct {
	hdr  *tar.Header
	data []byte
}

func layerFiles(t *testing.T, l v1.Layer) map[string]layerFile {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = layerFile{h, data}
	}
	return files
}

// TestImages builds both release images for both platforms once (real go
// builds) and checks what a registry and a kubelet would see.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release images")
	}
	ctx := context.Background()
	out := t.TempDir()
	opts := testBuildOptions(out)
	start := time.Now()
	m, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %d images for %v in %s", len(m.Images), DefaultPlatforms, time.Since(start).Round(time.Second))

	wantRefs := map[string]struct{ repo, tag string }{
		"operator": {"registry.example:5000/fleet/nodemirror-operator", "v1.2.3-test"},
		"sidecar":  {"registry.example:5000/other/sidecar", "edge"},
	}
	hostCA, err := os.ReadFile(DefaultCACertificates)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("images.json", func(t *testing.T) {
		read, err := ReadManifest(filepath.Join(out, ManifestFile))
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(m)
		b, _ := json.Marshal(read)
		if !bytes.Equal(a, b) {
			t.Errorf("images.json holds\n%s\nBuild returned\n%s", b, a)
		}
		if read.Version != "v1.2.3-test" || !read.Created.Equal(opts.Created) || read.Commit != opts.Commit {
			t.Errorf("images.json: version %q, commit %q, created %s", read.Version, read.Commit, read.Created)
		}
		if len(read.Images) != 2 {
			t.Fatalf("images.json lists %d images, want 2", len(read.Images))
		}
		for i, img := range read.Images {
			want := wantRefs[img.Name]
			if img.Name != Images[i].Name || img.Repository != want.repo || img.Tag != want.tag {
				t.Errorf("image %d: %s %s:%s, want %s %s:%s", i, img.Name, img.Repository, img.Tag, Images[i].Name, want.repo, want.tag)
			}
			if img.Reference != img.Repository+"@"+img.Digest || !strings.HasPrefix(img.Digest, "sha256:") {
				t.Errorf("%s: reference %q, digest %q", img.Name, img.Reference, img.Digest)
			}
			if img.ConfigImage != "ghcr.io/nodemirror/"+Images[i].Binary {
				t.Errorf("%s: configImage %q", img.Name, img.ConfigImage)
			}
		}
	})

	var baseDigests []v1.Hash
	for i, built := range m.Images {
		img := Images[i]
		t.Run(img.Name, func(t *testing.T) {
			dir := filepath.Join(out, built.Layout)
			top, err := os.ReadFile(filepath.Join(dir, "index.json"))
			if err != nil {
				t.Fatal(err)
			}
			var topIndex v1.IndexManifest
			if err := json.Unmarshal(top, &topIndex); err != nil {
				t.Fatal(err)
			}
			err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				if fi, err := d.Info(); err != nil || fi.Mode().Perm() != 0o644 {
					t.Errorf("%s: mode %v, %v", p, fi.Mode(), err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(topIndex.Manifests) != 1 || topIndex.Manifests[0].Digest.String() != built.Digest ||
				topIndex.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != built.Tag {
				t.Errorf("index.json of the layout: %s", top)
			}

			idx, err := OpenLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := idx.Digest(); d.String() != built.Digest {
				t.Errorf("index digest %s, images.json says %s", d, built.Digest)
			}
			// Digests, sizes and diff IDs all agree with the blobs.
			if err := validate.Index(idx); err != nil {
				t.Errorf("layout does not validate: %v", err)
			}
			if mt, _ := idx.MediaType(); mt != types.OCIImageIndex {
				t.Errorf("index media type %s", mt)
			}
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			var platforms []string
			for _, d := range im.Manifests {
				platforms = append(platforms, d.Platform.String())
			}
			if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
				t.Fatalf("index platforms %q, want exactly linux/amd64 and linux/arm64", platforms)
			}
			if im.Annotations["org.opencontainers.image.version"] != "v1.2.3-test" {
				t.Errorf("index annotations %v", im.Annotations)
			}

			for j, d := range im.Manifests {
				if d.MediaType != types.OCIManifestSchema1 || built.Platforms[j].Digest != d.Digest.String() {
					t.Errorf("%s: descriptor %+v, images.json says %+v", d.Platform, d, built.Platforms[j])
				}
				image, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				cf, err := image.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				p := d.Platform
				c := cf.Config
				if cf.OS != p.OS || cf.Architecture != p.Architecture {
					t.Errorf("%s: config says %s/%s", p, cf.OS, cf.Architecture)
				}
				if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/" + img.Binary}) ||
					len(c.Cmd) != 0 || len(c.Shell) != 0 || c.WorkingDir != "/" || len(c.ExposedPorts) != 0 || len(c.Volumes) != 0 {
					t.Errorf("%s: config %+v", p, c)
				}
				if !cf.Created.Time.Equal(opts.Created) {
					t.Errorf("%s: created %s", p, cf.Created.Time)
				}
				for k, v := range map[string]string{
					"org.opencontainers.image.source":   DefaultSource,
					"org.opencontainers.image.version":  "v1.2.3-test",
					"org.opencontainers.image.revision": opts.Commit,
					"org.opencontainers.image.title":    img.Binary,
					"org.opencontainers.image.licenses": "Apache-2.0",
					"org.opencontainers.image.created":  "2026-11-30T12:00:00Z",
				} {
					if c.Labels[k] != v {
						t.Errorf("%s: label %s = %q, want %q", p, k, c.Labels[k], v)
					}
				}
				if mt, _ := image.MediaType(); mt != types.OCIManifestSchema1 {
					t.Errorf("%s: manifest media type %s", p, mt)
				}
				layers, err := image.Layers()
				if err != nil {
					t.Fatal(err)
				}
				if len(layers) != 2 {
					t.Fatalf("%s: %d layers, want 2 (base, binary)", p, len(layers))
				}
				for _, l := range layers {
					if mt, _ := l.MediaType(); mt != types.OCILayer {
						t.Errorf("%s: layer media type %s", p, mt)
					}
				}
				bd, _ := layers[0].Digest()
				baseDigests = append(baseDigests, bd)

				base := layerFiles(t, layers[0])
				if ca := base["etc/ssl/certs/ca-certificates.crt"]; !bytes.Equal(ca.data, hostCA) || ca.hdr.Mode != 0o644 {
					t.Errorf("%s: ca-certificates.crt: mode %o, %d bytes (host's: %d)", p, ca.hdr.Mode, len(ca.data), len(hostCA))
				}
				if pw := string(base["etc/passwd"].data); !strings.Contains(pw, "\nnonroot:x:65532:65532:nonroot:/home/nonroot:") {
					t.Errorf("%s: /etc/passwd is %q", p, pw)
				}
				if g := string(base["etc/group"].data); !strings.Contains(g, "\nnonroot:x:65532:\n") {
					t.Errorf("%s: /etc/group is %q", p, g)
				}
				if tmp := base["tmp/"].hdr; tmp == nil || tmp.Typeflag != tar.TypeDir || tmp.Mode != 0o1777 {
					t.Errorf("%s: /tmp is %+v", p, tmp)
				}
				if home := base["home/nonroot/"].hdr; home == nil || home.Uid != NonrootUID || home.Gid != NonrootUID {
					t.Errorf("%s: /home/nonroot is %+v", p, home)
				}
				for name, f := range base {
					if !f.hdr.ModTime.Equal(opts.Created) {
						t.Errorf("%s: %s has mtime %s", p, name, f.hdr.ModTime)
					}
				}

				bin := layerFiles(t, layers[1])
				if len(bin) != 1 {
					t.Errorf("%s: binary layer holds %d files, want 1", p, len(bin))
				}
				f, ok := bin[img.Binary]
				if !ok {
					t.Fatalf("%s: no /%s in the binary layer", p, img.Binary)
				}
				// Owned by root, executable by all: the nonroot user runs
				// it and cannot replace it.
				if f.hdr.Typeflag != tar.TypeReg || f.hdr.Mode != 0o755 || f.hdr.Uid != 0 || f.hdr.Gid != 0 || len(f.data) < 1<<20 {
					t.Errorf("%s: /%s: type %c, mode %o, owner %d:%d, %d bytes", p, img.Binary, f.hdr.Typeflag, f.hdr.Mode, f.hdr.Uid, f.hdr.Gid, len(f.data))
				}
				if p.OS != runtime.GOOS || p.Architecture != runtime.GOARCH {
					continue
				}
				// The binary taken from the image runs here and says what
				// it was stamped with.
				exe := filepath.Join(t.TempDir(), img.Binary)
				if err := os.WriteFile(exe, f.data, os.FileMode(f.hdr.Mode)); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(exe, "--version")
				cmd.Env = []string{"HOME=" + t.TempDir(), "KUBECONFIG=/nonexistent"}
				got, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s --version: %v\n%s", img.Binary, err, got)
				}
				want := img.Binary + " v1.2.3-test (commit 0123456, " + runtime.Version() + ", " + p.OS + "/" + p.Architecture + ")\n"
				if string(got) != want {
					t.Errorf("%s --version printed %q, want %q", img.Binary, got, want)
				}
			}
		})
	}
	t.Run("base layer shared", func(t *testing.T) {
		for _, d := range baseDigests {
			if d != baseDigests[0] {
				t.Errorf("base layer digests differ: %v", baseDigests)
				break
			}
		}
	})

	// The same inputs give the same digests: a second build from scratch
	// (go build again, mostly from Go's build cache).
	t.Run("reproducible", func(t *testing.T) {
		start := time.Now()
		again, err := Build(ctx, testBuildOptions(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("second build in %s", time.Since(start).Round(time.Second))
		for i := range m.Images {
			a, b := m.Images[i], again.Images[i]
			if a.Digest != b.Digest || !slices.Equal(a.Platforms, b.Platforms) {
				t.Errorf("%s: first build %s %v, second %s %v", a.Name, a.Digest, a.Platforms, b.Digest, b.Platforms)
			}
		}
	})
}

func TestLayerReproducible(t *testing.T) {
	dir := t.TempDir()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("#!/bin/false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	digest := func(file string, created time.Time) v1.Hash {
		t.Helper()
		l, err := binaryLayer(bin, "x", filepath.Join(dir, file), created)
		if err != nil {
			t.Fatal(err)
		}
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// The file's own mode and time do not matter, the creation time does.
	a := digest("a.tar.gz", created)
	if err := os.Chtimes(bin, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o700); err != nil {
		t.Fatal(err)
	}
	if b := digest("b.tar.gz", created); a != b {
		t.Errorf("same content and time, digests %s and %s", a, b)
	}
	if c := digest("c.tar.gz", created.Add(time.Second)); a == c {
		t.Errorf("another creation time gives the same digest %s", c)
	}
}

func TestMissingCACertificates(t *testing.T) {
	_, err := baseLayer(filepath.Join(t.TempDir(), "out.tar.gz"), "/nonexistent/ca-certificates.crt", time.Unix(0, 0))
	if err == nil || !strings.Contains(err.Error(), "ca-certificates package") {
		t.Errorf("error %v, want one naming Debian's ca-certificates package", err)
	}
	empty := filepath.Join(t.TempDir(), "empty.crt")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := baseLayer(filepath.Join(t.TempDir(), "out.tar.gz"), empty, time.Unix(0, 0)); err == nil {
		t.Error("an empty CA bundle: no error")
	}
}

func TestBuildRefusesBadInput(t *testing.T) {
	for name, o := range map[string]BuildOptions{
		"no version":   {Out: t.TempDir()},
		"no out":       {Version: "v1"},
		"bad tag":      {Out: t.TempDir(), Version: "v1+build"},
		"bad ref":      {Out: t.TempDir(), Version: "v1", Refs: map[string]string{"operator": "Example.com/UPPER:v1"}},
		"bad platform": {Out: t.TempDir(), Version: "v1", Platforms: []string{"linux/amd64/v2/extra"}},
	} {
		if _, err := Build(context.Background(), o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestLDFlags(t *testing.T) {
	const p = "github.com/nodemirror/nodemirror/internal/version"
	if got, want := LDFlags("v1", "0123456789abcdef0123456789abcdef01234567"), "-s -w -X "+p+".Version=v1 -X "+p+".Commit=0123456"; got != want {
		t.Errorf("LDFlags = %q, want %q", got, want)
	}
	if got, want := LDFlags("v1", ""), "-s -w -X "+p+".Version=v1"; got != want {
		t.Errorf("LDFlags = %q, want %q", got, want)
	}
}
