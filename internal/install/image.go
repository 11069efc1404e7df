// Package install builds what a release of nodemirror ships: the OCI images
// of the operator and the sidecar (built with go build and
// go-containerregistry, no container engine), and the install manifest
// rendered from config/ with those images pinned by digest.
package install

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nodemirror/nodemirror/internal/version"
)

// Image is one image of a release: one static binary, its entrypoint.
type Image struct {
	// Name is the short name: "operator", "sidecar"; the layout is written
	// to <out>/images/<Name>.
	Name string
	// Binary is the file at the image's root and the base name of its
	// repository: "nodemirror-operator".
	Binary string
	// Package is the main package, relative to the module root.
	Package string
	// Description is the org.opencontainers.image.description label.
	Description string
}

// DefaultRegistry is where images live unless told otherwise, and the
// registry the image names in config/ are written with.
const DefaultRegistry = "ghcr.io/nodemirror"

// ConfigImage is the image name as written in config/ (kustomize sources),
// e.g. ghcr.io/nodemirror/nodemirror-operator: what the release pins.
func (i Image) ConfigImage() string { return DefaultRegistry + "/" + i.Binary }

// Images are the images of a release.
var Images = []Image{
	{Name: "operator", Binary: "nodemirror-operator", Package: "./cmd/operator",
		Description: "nodemirror operator: mirrors the nodes of member clusters into NodeSnapshots on the hub"},
	{Name: "sidecar", Binary: "nodemirror-sidecar", Package: "./cmd/sidecar",
		Description: "nodemirror sidecar: serves the hub's NodeSnapshots to websocket and HTTP clients and the web UI"},
}

// DefaultPlatforms are the platforms each image is built for.
var DefaultPlatforms = []string{"linux/amd64", "linux/arm64"}

// DefaultCACertificates is the CA bundle copied into the images.
const DefaultCACertificates = "/etc/ssl/certs/ca-certificates.crt"

// DefaultSource is the org.opencontainers.image.source label.
const DefaultSource = "https://github.com/nodemirror/nodemirror"

// NonrootUID is the user (and group) the images run as, "nonroot" in the
// image's /etc/passwd, as in distroless images.
const NonrootUID = 65532

// BuildOptions say what to build and how.
type BuildOptions struct {
	// ModuleDir is the root of the module the binaries are built from.
	ModuleDir string
	// Out is the directory written to: Out/images/<name> (OCI image layouts)
	// and Out/images.json.
	Out string
	// Version is stamped into the binaries and is the default tag.
	Version string
	// Commit is stamped into the binaries (its first 7 characters when it
	// is a full hash) and is the org.opencontainers.image.revision label.
	Commit string
	// Created is the images' creation time and every file's modification
	// time in their layers, so that the same inputs give the same digests.
	Created time.Time
	// Registry the repositories are under, DefaultRegistry if empty.
	Registry string
	// Refs maps an image's Name to its full reference (repository:tag),
	// overriding <Registry>/<Binary>:<Version>.
	Refs map[string]string
	// Platforms, DefaultPlatforms if empty; each "os/arch[/variant]".
	Platforms []string
	// Images to build, Images if empty.
	Images []Image
	// CACertificates is the CA bundle file, DefaultCACertificates if empty.
	CACertificates string
	// Source and Licenses are OCI labels; Source defaults to DefaultSource,
	// Licenses (an SPDX expression) is left out when empty.
	Source, Licenses string
	// Log gets a line per step; nil is silent.
	Log io.Writer
}

// Manifest is what Build writes to <out>/images.json.
type Manifest struct {
	Version string       `json:"version"`
	Commit  string       `json:"commit,omitempty"`
	Created time.Time    `json:"created"`
	Images  []BuiltImage `json:"images"`
}

// BuiltImage is one image Build wrote.
type BuiltImage struct {
	Name string `json:"name"`
	// Repository and Tag the image is meant to be pushed as.
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// Digest of the image index (all platforms).
	Digest string `json:"digest"`
	// Reference is Repository@Digest, what an install manifest pins.
	Reference string `json:"reference"`
	// ConfigImage is the image name in config/ that Reference replaces.
	ConfigImage string `json:"configImage"`
	// Layout is the OCI image layout directory, relative to the file.
	Layout    string             `json:"layout"`
	Platforms []PlatformManifest `json:"platforms"`
}

// PlatformManifest is the image manifest of one platform in an index.
type PlatformManifest struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
}

// ManifestFile is the name of the file Build writes into Out.
const ManifestFile = "images.json"

// Build builds the binaries for every platform, assembles one multi-platform
// image index per image and writes each as an OCI image layout under
// <Out>/images/<name>, plus <Out>/images.json. Layouts are replaced, not
// added to.
func Build(ctx context.Context, o BuildOptions) (*Manifest, error) {
	o = o.withDefaults()
	if o.Version == "" {
		return nil, errors.New("no version to build")
	}
	if o.Out == "" {
		return nil, errors.New("no output directory")
	}
	refs := map[string]name.Tag{}
	for _, img := range o.Images {
		r := o.Refs[img.Name]
		if r == "" {
			r = o.Registry + "/" + img.Binary + ":" + o.Version
		}
		tag, err := name.NewTag(r, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("image %s: %q is not a repository:tag reference: %w", img.Name, r, err)
		}
		refs[img.Name] = tag
	}
	platforms := make([]v1.Platform, 0, len(o.Platforms))
	for _, s := range o.Platforms {
		p, err := v1.ParsePlatform(s)
		if err != nil {
			return nil, err
		}
		platforms = append(platforms, *p)
	}
	work, err := os.MkdirTemp("", "nodemirror-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	created := o.Created.UTC().Truncate(time.Second)
	base, err := baseLayer(filepath.Join(work, "base.tar.gz"), o.CACertificates, created)
	if err != nil {
		return nil, err
	}
	// platform -> image name -> binary layer
	binLayers := map[string]map[string]v1.Layer{}
	for _, p := range platforms {
		dir := filepath.Join(work, strings.ReplaceAll(p.String(), "/", "-"))
		o.logf("building %s for %s", strings.Join(binaries(o.Images), ", "), p.String())
		if err := goBuild(ctx, o, p, dir); err != nil {
			return nil, err
		}
		binLayers[p.String()] = map[string]v1.Layer{}
		for _, img := range o.Images {
			l, err := binaryLayer(filepath.Join(dir, path.Base(img.Package)), img.Binary, dir+"-"+img.Name+".tar.gz", created)
			if err != nil {
				return nil, err
			}
			binLayers[p.String()][img.Name] = l
		}
	}

	m := &Manifest{Version: o.Version, Commit: o.Commit, Created: created}
	for _, img := range o.Images {
		ref := refs[img.Name]
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		b := BuiltImage{
			Name: img.Name, Repository: ref.Context().Name(), Tag: ref.TagStr(),
			ConfigImage: img.ConfigImage(), Layout: filepath.ToSlash(filepath.Join("images", img.Name)),
		}
		for _, p := range platforms {
			image, err := assemble(o, img, p, created, base, binLayers[p.String()][img.Name])
			if err != nil {
				return nil, fmt.Errorf("image %s for %s: %w", img.Name, p.String(), err)
			}
			d, err := image.Digest()
			if err != nil {
				return nil, err
			}
			b.Platforms = append(b.Platforms, PlatformManifest{Platform: p.String(), Digest: d.String()})
			plat := p
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: image, Descriptor: v1.Descriptor{Platform: &plat}})
		}
		idx = mutate.Annotations(idx, o.annotations(img, created)).(v1.ImageIndex)
		d, err := idx.Digest()
		if err != nil {
			return nil, err
		}
		b.Digest, b.Reference = d.String(), b.Repository+"@"+d.String()
		if err := writeLayout(filepath.Join(o.Out, b.Layout), idx, ref); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		o.logf("wrote %s: %s (%s)", filepath.Join(o.Out, b.Layout), b.Reference, ref.String())
		m.Images = append(m.Images, b)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, ManifestFile), append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	return m, nil
}

// ReadManifest reads an images.json written by Build.
func ReadManifest(file string) (*Manifest, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if len(m.Images) == 0 {
		return nil, fmt.Errorf("%s lists no images", file)
	}
	for _, img := range m.Images {
		if img.ConfigImage == "" || img.Reference == "" {
			return nil, fmt.Errorf("%s: image %q has no configImage or reference", file, img.Name)
		}
	}
	return &m, nil
}

func (o BuildOptions) withDefaults() BuildOptions {
	if o.ModuleDir == "" {
		o.ModuleDir = "."
	}
	if o.Registry == "" {
		o.Registry = DefaultRegistry
	}
	if len(o.Platforms) == 0 {
		o.Platforms = DefaultPlatforms
	}
	if len(o.Images) == 0 {
		o.Images = Images
	}
	if o.CACertificates == "" {
		o.CACertificates = DefaultCACertificates
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0)
	}
	return o
}

func (o BuildOptions) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

func binaries(imgs []Image) []string {
	var s []string
	for _, i := range imgs {
		s = append(s, i.Binary)
	}
	return s
}

// shortCommit is what the binaries are stamped with: a full hash shortened
// as git does by default.
func shortCommit(c string) string {
	if len(c) == 40 && strings.Trim(c, "0123456789abcdef") == "" {
		return c[:7]
	}
	return c
}

// LDFlags are the linker flags of a release binary: no symbol table or
// DWARF, the version and commit stamped.
func LDFlags(ver, commit string) string {
	f := "-s -w -X " + version.Package + ".Version=" + ver
	if commit != "" {
		f += " -X " + version.Package + ".Commit=" + shortCommit(commit)
	}
	return f
}

// goBuild builds every image's binary for p into dir, in one go build so
// that the links run in parallel. A binary lands at dir/<last element of
// its package path>.
func goBuild(ctx context.Context, o BuildOptions, p v1.Platform, dir string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator), "-trimpath", "-buildvcs=false",
		"-ldflags", LDFlags(o.Version, o.Commit)}
	seen := map[string]bool{}
	for _, img := range o.Images {
		b := path.Base(img.Package)
		if seen[b] {
			return fmt.Errorf("two images build packages named %s", b)
		}
		seen[b] = true
		args = append(args, img.Package)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.ModuleDir
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && p.Variant != "" {
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s (GOOS=%s GOARCH=%s): %w\n%s", strings.Join(args, " "), p.OS, p.Architecture, err, stderr.String())
	}
	return nil
}

// assemble makes the image of img for platform p from the two layers.
func assemble(o BuildOptions, img Image, p v1.Platform, created time.Time, base, bin v1.Layer) (v1.Image, error) {
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			User:       fmt.Sprintf("%d:%d", NonrootUID, NonrootUID),
			Entrypoint: []string{"/" + img.Binary},
			WorkingDir: "/",
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"SSL_CERT_FILE=" + caPath,
			},
			Labels: o.annotations(img, created),
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	i, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return nil, err
	}
	i = mutate.MediaType(i, types.OCIManifestSchema1)
	i = mutate.ConfigMediaType(i, types.OCIConfigJSON)
	return mutate.Append(i,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "nodemirror release: CA certificates, /etc/passwd, /etc/group, /tmp",
		}},
		mutate.Addendum{Layer: bin, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: created}, CreatedBy: "nodemirror release: /" + img.Binary + " (go build, CGO_ENABLED=0, -trimpath)",
		}},
	)
}

// annotations are the OCI labels of the image config, and the annotations
// of the index.
func (o BuildOptions) annotations(img Image, created time.Time) map[string]string {
	a := map[string]string{
		"org.opencontainers.image.title":       img.Binary,
		"org.opencontainers.image.description": img.Description,
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.url":         o.Source,
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.created":     created.Format(time.RFC3339),
	}
	if o.Commit != "" {
		a["org.opencontainers.image.revision"] = o.Commit
	}
	if o.Licenses != "" {
		a["org.opencontainers.image.licenses"] = o.Licenses
	}
	return a
}

// writeLayout replaces dir with an OCI image layout whose index.json holds
// one descriptor, idx's, tagged with ref (org.opencontainers.image.ref.name
// is the tag, as tools that read layouts expect).
func writeLayout(dir string, idx v1.ImageIndex, ref name.Tag) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	top := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx, Descriptor: v1.Descriptor{
		Annotations: map[string]string{
			"org.opencontainers.image.ref.name": ref.TagStr(),
			"io.containerd.image.name":          ref.String(),
		},
	}})
	if _, err := layout.Write(dir, top); err != nil {
		return err
	}
	// go-containerregistry writes some blobs 0600 and the rest 0777 less
	// the umask: make the layout readable by all and executable by none,
	// whoever serves or copies it.
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o644)
	})
}

// OpenLayout reads the image index of a layout written by Build.
func OpenLayout(dir string) (v1.ImageIndex, error) {
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 || m.Manifests[0].MediaType != types.OCIImageIndex {
		return nil, fmt.Errorf("%s: index.json should hold exactly one image index", dir)
	}
	return top.ImageIndex(m.Manifests[0].Digest)
}

// caPath is where the CA bundle is in the images, where Go and most TLS
// stacks look first on Linux.
const caPath = "/etc/ssl/certs/ca-certificates.crt"

const passwd = `root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
`

const group = `root:x:0:
nobody:x:65534:
nonroot:x:65532:
`

// tarEntry is one file or directory of a layer.
type tarEntry struct {
	name     string
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
	file     string // content from this file instead of data
}

// baseLayer is the layer every image shares: CA certificates, passwd and
// group with the nonroot user, /tmp and nonroot's home.
func baseLayer(file, caFile string, created time.Time) (v1.Layer, error) {
	ca, err := os.ReadFile(caFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no CA certificates at %s: install Debian's ca-certificates package (apt-get install ca-certificates)", caFile)
	}
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, fmt.Errorf("%s holds no PEM certificate: reinstall Debian's ca-certificates package (apt-get install --reinstall ca-certificates)", caFile)
	}
	entries := []tarEntry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true, uid: NonrootUID, gid: NonrootUID},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
	return writeLayer(file, entries, created)
}

// binaryLayer is the layer holding the binary at /<name>, owned by root and
// executable by all, so that the nonroot user runs it and cannot change it.
func binaryLayer(bin, name, file string, created time.Time) (v1.Layer, error) {
	return writeLayer(file, []tarEntry{{name: name, mode: 0o755, file: bin}}, created)
}

// writeLayer writes entries as a gzipped tar to file and makes it a layer.
// Everything that goes into the tar is fixed by the entries and created, and
// gzip's header has no name and no time, so the digest depends on the
// content only.
func writeLayer(file string, entries []tarEntry, created time.Time) (v1.Layer, error) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: created,
			Format:  tar.FormatUSTAR,
		}
		var src io.Reader
		switch {
		case e.dir:
			h.Typeflag = tar.TypeDir
		case e.file != "":
			in, err := os.Open(e.file)
			if err != nil {
				return nil, err
			}
			defer in.Close()
			st, err := in.Stat()
			if err != nil {
				return nil, err
			}
			h.Typeflag, h.Size, src = tar.TypeReg, st.Size(), in
		default:
			h.Typeflag, h.Size, src = tar.TypeReg, int64(len(e.data)), bytes.NewReader(e.data)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if src != nil {
			if _, err := io.Copy(tw, src); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return tarball.LayerFromFile(file, tarball.WithMediaType(types.OCILayer))
}
