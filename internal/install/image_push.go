package install

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push pushes every image listed in the images.json at manifestFile, from
// its layout, as Repository:Tag, with the credentials of the Docker config
// (~/.docker/config.json, $DOCKER_CONFIG) and its credential helpers. It
// checks that the index digest is the one images.json pins, so that what
// the install manifest references is what the registry serves.
func Push(ctx context.Context, manifestFile string, log io.Writer) error {
	m, err := ReadManifest(manifestFile)
	if err != nil {
		return err
	}
	for _, img := range m.Images {
		idx, err := OpenLayout(filepath.Join(filepath.Dir(manifestFile), filepath.FromSlash(img.Layout)))
		if err != nil {
			return err
		}
		d, err := idx.Digest()
		if err != nil {
			return err
		}
		if d.String() != img.Digest {
			return fmt.Errorf("%s: layout holds %s, images.json says %s: build again", img.Name, d, img.Digest)
		}
		tag, err := name.NewTag(img.Repository+":"+img.Tag, name.StrictValidation)
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(tag, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", tag, err)
		}
		if log != nil {
			fmt.Fprintf(log, "pushed %s (%s)\n", tag, img.Reference)
		}
	}
	return nil
}
