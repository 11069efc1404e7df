// Command release builds what a nodemirror release ships, without a
// container engine:
//
//	go run ./hack/release images --version v0.1.0 --registry ghcr.io/nodemirror --out dist
//	go run ./hack/release installer --images dist/images.json --kustomize config/default --out dist/install.yaml
//	go run ./hack/release push --images dist/images.json
//
// images writes an OCI image layout per image (operator, sidecar; linux/amd64
// and linux/arm64 in one index each) under <out>/images/ and lists them with
// their digests in <out>/images.json. installer renders the kustomization
// with the images pinned by digest (from images.json) or by tag (--image).
// push sends the layouts to their registry with the Docker config's
// credentials; it is the only command that needs the network.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nodemirror/nodemirror/internal/install"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "release:", err)
		}
		os.Exit(2)
	}
}

const usage = `usage: release <command> [flags]

commands:
  images     build the OCI images into <out>/images/<name> and <out>/images.json
  installer  render a kustomization (config/default) into one install manifest, images pinned
  push       push the images of an images.json to their registry (Docker config credentials)

"release <command> -h" lists a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command")
	}
	switch args[0] {
	case "images":
		return images(ctx, args[1:], stdout, stderr)
	case "installer":
		return installer(args[1:], stdout, stderr)
	case "push":
		return push(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// imageRefs is a repeatable name=reference flag.
type imageRefs map[string]string

func (r imageRefs) String() string {
	var s []string
	for k, v := range r {
		s = append(s, k+"="+v)
	}
	sort.Strings(s)
	return strings.Join(s, ",")
}

func (r imageRefs) Set(v string) error {
	k, ref, ok := strings.Cut(v, "=")
	if !ok || ref == "" {
		return fmt.Errorf("%q: want name=reference, e.g. operator=example.com/nodemirror-operator:v1", v)
	}
	if _, err := imageByName(k); err != nil {
		return err
	}
	r[k] = ref
	return nil
}

func imageByName(n string) (install.Image, error) {
	var names []string
	for _, img := range install.Images {
		if img.Name == n {
			return img, nil
		}
		names = append(names, img.Name)
	}
	return install.Image{}, fmt.Errorf("no image %q (images: %s)", n, strings.Join(names, ", "))
}

func images(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	refs := imageRefs{}
	var (
		o         install.BuildOptions
		platforms string
		pushToo   bool
	)
	fs.StringVar(&o.Version, "version", "", "Version stamped into the binaries and default tag (default: git describe --tags --always --dirty, or v0.0.0-dev).")
	fs.StringVar(&o.Commit, "commit", "", "Commit stamped into the binaries and the revision label (default: git rev-parse HEAD).")
	fs.StringVar(&o.Registry, "registry", install.DefaultRegistry, "Registry and path the repositories nodemirror-operator and nodemirror-sidecar are under.")
	fs.Var(refs, "image", "name=repository:tag of one image (operator, sidecar), instead of <registry>/nodemirror-<name>:<version>; repeatable.")
	fs.StringVar(&o.Out, "out", "dist", "Directory to write images/<name> and images.json to.")
	fs.StringVar(&platforms, "platforms", strings.Join(install.DefaultPlatforms, ","), "Comma-separated platforms of each image.")
	fs.StringVar(&o.CACertificates, "ca-certificates", install.DefaultCACertificates, "CA bundle copied into the images (Debian's ca-certificates package).")
	fs.StringVar(&o.Source, "source", install.DefaultSource, "org.opencontainers.image.source label.")
	fs.StringVar(&o.Licenses, "licenses", "", "org.opencontainers.image.licenses label (SPDX); left out when empty.")
	fs.BoolVar(&pushToo, "push", false, "Also push the images to their repositories (credentials from the Docker config); not exercised by the tests.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("images: unexpected arguments %q", fs.Args())
	}
	var err error
	o.ModuleDir, err = moduleRoot()
	if err != nil {
		return err
	}
	if o.Version == "" {
		o.Version = gitVersion(o.ModuleDir)
	}
	if o.Commit == "" {
		o.Commit = git(o.ModuleDir, "rev-parse", "HEAD")
	}
	if o.Created, err = sourceDate(o.ModuleDir); err != nil {
		return err
	}
	o.Platforms = strings.Split(platforms, ",")
	o.Refs = refs
	o.Log = stderr
	m, err := install.Build(ctx, o)
	if err != nil {
		return err
	}
	for _, img := range m.Images {
		fmt.Fprintf(stdout, "%s\t%s:%s\t%s\n", img.Name, img.Repository, img.Tag, img.Reference)
	}
	if pushToo {
		return install.Push(ctx, filepath.Join(o.Out, install.ManifestFile), stderr)
	}
	return nil
}

func installer(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("installer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	refs := imageRefs{}
	var dir, imagesFile, out, ver string
	fs.StringVar(&dir, "kustomize", "config/default", "Kustomization to render.")
	fs.StringVar(&imagesFile, "images", "", "images.json written by the images command: pins every image by its index digest.")
	fs.Var(refs, "image", "name=reference to put in place of an image (operator, sidecar) instead of, or over, --images; repeatable.")
	fs.StringVar(&out, "out", "dist/install.yaml", "File to write, - for standard output.")
	fs.StringVar(&ver, "version", "", "Version named in the manifest's header (default: the one in --images).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("installer: unexpected arguments %q", fs.Args())
	}
	pins := map[string]string{} // config image -> reference
	tags := map[string]string{} // config image -> repository:tag, for the header
	if imagesFile != "" {
		m, err := install.ReadManifest(imagesFile)
		if err != nil {
			return err
		}
		for _, img := range m.Images {
			pins[img.ConfigImage] = img.Reference
			tags[img.ConfigImage] = img.Repository + ":" + img.Tag
		}
		if ver == "" {
			ver = m.Version
		}
	}
	for n, ref := range refs {
		img, _ := imageByName(n)
		pins[img.ConfigImage()] = ref
		delete(tags, img.ConfigImage())
	}
	if len(pins) == 0 {
		return errors.New("installer: nothing to pin: give --images or --image")
	}
	manifest, err := install.Render(dir, pins)
	if err != nil {
		return err
	}
	if err := checkPinned(dir, manifest, pins); err != nil {
		return err
	}

	var h strings.Builder
	title := "nodemirror"
	if ver != "" {
		title += " " + ver
	}
	fmt.Fprintf(&h, "# %s: rendered from %s by hack/release.\n", title, filepath.ToSlash(dir))
	fmt.Fprintf(&h, "# Apply with: kubectl apply --server-side -f install.yaml\n")
	var from []string
	for f := range pins {
		from = append(from, f)
	}
	sort.Strings(from)
	for _, f := range from {
		if t := tags[f]; t != "" {
			fmt.Fprintf(&h, "# %s is %s\n", pins[f], t)
		}
	}
	data := append([]byte(h.String()), manifest...)
	if out == "-" {
		_, err := stdout.Write(data)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return err
	}
	for _, f := range from {
		fmt.Fprintf(stderr, "%s: %s -> %s\n", out, f, pins[f])
	}
	return nil
}

// checkPinned fails when a pinned image is not in the manifest, which means
// the kustomization does not use the name the release pins: the manifest
// would run something other than the release's images.
func checkPinned(dir string, manifest []byte, pins map[string]string) error {
	got, err := install.ContainerImages(manifest)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, g := range got {
		in[g] = true
	}
	var missing []string
	for from, to := range pins {
		if !in[to] {
			missing = append(missing, from)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s runs no container with image %s, which the release pins: its container images are %s",
			dir, strings.Join(missing, " or "), strings.Join(got, ", "))
	}
	return nil
}

func push(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	imagesFile := fs.String("images", "dist/images.json", "images.json written by the images command.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return install.Push(ctx, *imagesFile, stderr)
}

// moduleRoot is the main module's directory (go env GOMOD's).
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the nodemirror source tree")
	}
	return filepath.Dir(mod), nil
}

// git runs git in dir and returns its trimmed output, "" on any failure
// (not a repository, no git).
func git(dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func gitVersion(dir string) string {
	if v := git(dir, "describe", "--tags", "--always", "--dirty"); v != "" {
		return v
	}
	return "v0.0.0-dev"
}

// sourceDate is the images' creation time: $SOURCE_DATE_EPOCH, else the
// commit time of HEAD, else the Unix epoch. Never the clock, so that the same
// sources give the same digests.
func sourceDate(dir string) (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	if s := git(dir, "log", "-1", "--format=%ct", "HEAD"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC(), nil
		}
	}
	return time.Unix(0, 0).UTC(), nil
}
