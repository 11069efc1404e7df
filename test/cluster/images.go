package cluster

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// PauseImage is the sandbox image containerd starts every pod with: built
// here from ./pause, imported before the kubelet starts, and pinned in
// containerd's config so that image GC never removes it.
const PauseImage = "nodemirror.test/pause:1.0"

// criNamespace is the containerd namespace the CRI plugin keeps images in.
const criNamespace = "k8s.io"

func (n *Node) importPause(ctx context.Context) error {
	file := filepath.Join(n.c.dir, "pause.tar")
	if _, err := os.Stat(file); err != nil {
		if err := buildPause(ctx, n.c.opts.Root, n.c.dir, file); err != nil {
			return err
		}
	}
	return n.importArchive(ctx, file)
}

// buildPause builds ./pause statically and writes a one-layer image of it
// as a docker archive.
func buildPause(ctx context.Context, root, dir, file string) error {
	bin := filepath.Join(dir, "pause")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./test/cluster/pause")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the pause binary: %w: %s", err, clip(out))
	}
	layerFile := filepath.Join(dir, "pause-layer.tar")
	if err := tarFiles(layerFile, map[string]string{"pause": bin}); err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(layerFile)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = []string{"/pause"}
	cfg.Config.User = "65535:65535"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	ref, err := name.NewTag(PauseImage)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(file, ref, img)
}

// tarFiles writes a tar of files (name in the archive → file on disk), each
// executable, owned by root.
func tarFiles(out string, files map[string]string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for name, src := range files {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// importArchive imports a docker or OCI archive into the node's CRI image
// store, this machine's platform only.
func (n *Node) importArchive(ctx context.Context, file string) error {
	_, err := run(ctx, n.c.bins.ctr, "--address", n.Socket(), "--namespace", criNamespace,
		"images", "import", "--platform", "linux/"+runtime.GOARCH, file)
	return err
}

// ImportLayout imports an OCI image layout directory (as make images
// writes under dist/images/) into every node's runtime, this machine's
// platform only. The layout names its image (io.containerd.image.name);
// the import is also named digestRef (repository@sha256:…), the name an
// install manifest pinned by digest asks the kubelet for, so that nothing
// is pulled.
func (c *Cluster) ImportLayout(ctx context.Context, layoutDir, name, digestRef string) error {
	file := filepath.Join(c.dir, filepath.Base(layoutDir)+"-"+fmt.Sprint(time.Now().UnixNano())+".tar")
	if err := tarDir(file, layoutDir); err != nil {
		return err
	}
	defer os.Remove(file)
	for _, n := range c.Nodes {
		ctr := []string{"--address", n.Socket(), "--namespace", criNamespace}
		if _, err := run(ctx, c.bins.ctr, append(ctr, "images", "import", "--platform", "linux/"+runtime.GOARCH, file)...); err != nil {
			return err
		}
		if digestRef == "" {
			continue
		}
		if _, err := run(ctx, c.bins.ctr, append(ctr, "images", "tag", "--force", name, digestRef)...); err != nil {
			return err
		}
	}
	return nil
}

// tarDir writes a tar of the directory's files, as an OCI archive holds
// its layout.
func tarDir(out, dir string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
