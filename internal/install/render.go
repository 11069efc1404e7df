package install

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/kustomize/api/filters/imagetag"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
)

// imageFieldSpecs are the fields kustomize's images transformer sets
// besides containers and initContainers (which its legacy filter finds
// anywhere in an object): kustomize's default configuration for images.
var imageFieldSpecs = []types.FieldSpec{
	{Path: "spec/containers[]/image", CreateIfNotPresent: true},
	{Path: "spec/initContainers[]/image", CreateIfNotPresent: true},
	{Path: "spec/volumes[]/image/reference", CreateIfNotPresent: true},
	{Path: "spec/template/spec/containers[]/image", CreateIfNotPresent: true},
	{Path: "spec/template/spec/initContainers[]/image", CreateIfNotPresent: true},
	{Path: "spec/template/spec/volumes[]/image/reference", CreateIfNotPresent: true},
	{Path: "spec/jobTemplate/spec/template/spec/volumes[]/image/reference", CreateIfNotPresent: true},
}

// Render builds the kustomization in kustomizeDir as `kustomize build` does
// (resources in kustomize's legacy order: namespaces and CRDs first, load
// restricted to the kustomization's root) and then replaces images as a
// kustomize `images:` entry per map entry would, without touching any file:
// each key is an image name as written in the sources (without tag or
// digest; every tag and digest of that name matches), each value the
// reference it becomes: "repo@sha256:…" (name and digest set, any tag
// dropped), "repo:tag" (name and tag set, any digest dropped) or
// "repo:tag@sha256:…". Images not named in the map are left as they are, and
// a name that matches nothing is not an error (see ContainerImages to check
// the outcome). The result is multi-document YAML.
func Render(kustomizeDir string, images map[string]string) ([]byte, error) {
	var transforms []types.Image
	for from, to := range images {
		img, err := imageTransform(from, to)
		if err != nil {
			return nil, err
		}
		transforms = append(transforms, img)
	}
	sort.Slice(transforms, func(i, j int) bool { return transforms[i].Name < transforms[j].Name })

	abs, err := filepath.Abs(kustomizeDir)
	if err != nil {
		return nil, err
	}
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", kustomizeDir, err)
	}
	for _, img := range transforms {
		if err := applyImage(m, img); err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
	}
	return m.AsYaml()
}

// applyImage is what kustomize's ImageTagTransformer does for one images:
// entry with the default field specs.
func applyImage(m resmap.ResMap, img types.Image) error {
	if err := m.ApplyFilter(imagetag.LegacyFilter{ImageTag: img}); err != nil {
		return err
	}
	return m.ApplyFilter(imagetag.Filter{ImageTag: img, FsSlice: imageFieldSpecs})
}

// imageTransform is the kustomize images: entry that makes from into to.
func imageTransform(from, to string) (types.Image, error) {
	if from == "" || strings.ContainsAny(from, "@") || hasTag(from) {
		return types.Image{}, fmt.Errorf("image name %q: want a name without tag or digest", from)
	}
	img := types.Image{Name: from}
	ref := to
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref, img.Digest = ref[:i], ref[i+1:]
		if !strings.HasPrefix(img.Digest, "sha256:") || len(img.Digest) != len("sha256:")+64 {
			return types.Image{}, fmt.Errorf("image %s: %q has no sha256 digest", from, to)
		}
	}
	if hasTag(ref) {
		i := strings.LastIndexByte(ref, ':')
		ref, img.NewTag = ref[:i], ref[i+1:]
	}
	if ref == "" || (img.Digest == "" && img.NewTag == "") {
		return types.Image{}, fmt.Errorf("image %s: %q is neither repo@digest, repo:tag nor repo:tag@digest", from, to)
	}
	img.NewName = ref
	return img, nil
}

// hasTag tells whether an image name without digest ends in :tag (a colon
// after the last slash; a registry port comes before one).
func hasTag(ref string) bool {
	return strings.LastIndexByte(ref, ':') > strings.LastIndexByte(ref, '/')
}

// ContainerImages lists, sorted and without duplicates, the image of every
// container and init container of every object in a multi-document YAML
// manifest such as Render's result.
func ContainerImages(manifest []byte) ([]string, error) {
	seen := map[string]bool{}
	d := kyaml.NewDecoder(bytes.NewReader(manifest))
	for {
		var n kyaml.Node
		err := d.Decode(&n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := walkImages(kyaml.NewRNode(&n), seen); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// walkImages finds the image of every item of every containers or
// initContainers list in n, however deep (pods, pod templates, cron jobs,
// custom resources alike).
func walkImages(n *kyaml.RNode, seen map[string]bool) error {
	switch n.YNode().Kind {
	case kyaml.DocumentNode:
		for _, c := range n.YNode().Content {
			if err := walkImages(kyaml.NewRNode(c), seen); err != nil {
				return err
			}
		}
	case kyaml.MappingNode:
		return n.VisitFields(func(f *kyaml.MapNode) error {
			key := f.Key.YNode().Value
			if (key == "containers" || key == "initContainers") && f.Value.YNode().Kind == kyaml.SequenceNode {
				for _, c := range f.Value.YNode().Content {
					if img := kyaml.NewRNode(c).Field("image"); img != nil && img.Value.YNode().Kind == kyaml.ScalarNode {
						seen[img.Value.YNode().Value] = true
					}
				}
			}
			return walkImages(f.Value, seen)
		})
	case kyaml.SequenceNode:
		for _, c := range n.YNode().Content {
			if err := walkImages(kyaml.NewRNode(c), seen); err != nil {
				return err
			}
		}
	}
	return nil
}
