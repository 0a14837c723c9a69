// Package ociimage writes container images with no registry and no
// daemon: an OCI image layout in a tar stream (Write), one uncompressed
// layer per platform, ready for `ctr -n k8s.io images import`. The test
// images (package testimages) and cloudcore's release image (`make image`)
// are written with it.
//
// The archives are deterministic (fixed timestamps and ownership), so the
// same inputs give the same digests.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// epoch is every file's and the image's timestamp, so archives are
// reproducible.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one entry of an image's single layer.
type File struct {
	// Path is relative to the root, e.g. "bin/sh".
	Path string
	// Mode holds the permission bits and fs.ModeDir or fs.ModeSymlink for
	// directories and symlinks; a plain file otherwise.
	Mode fs.FileMode
	// Data is a plain file's content.
	Data []byte
	// Link is a symlink's target.
	Link string
}

// Config is the part of an OCI image configuration the tests need.
type Config struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
	User       string   `json:"User,omitempty"`
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
	OS           string `json:"os"`
}

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
)

// Image is one platform's image of an archive: one uncompressed layer of
// Files and the configuration.
type Image struct {
	// Arch is the GOARCH it runs on ("amd64", "arm64", "arm"); Variant
	// the ARM version ("v7") where one applies.
	Arch, Variant string
	Files         []File
	Config        Config
}

// Write writes an OCI image layout as a tar stream to w: an index naming
// name (a full reference such as "tether.local/cloudcore:v1") with one
// manifest per image, each for its platform, so that containerd picks the
// one of the machine (`ctr images import` imports them all with
// --all-platforms, else the machine's).
func Write(w io.Writer, name string, images []Image) error {
	if len(images) == 0 {
		return fmt.Errorf("%s: no image", name)
	}
	type entry struct {
		name string
		data []byte
	}
	var (
		entries   []entry
		manifests []descriptor
		seen      = map[string]bool{}
	)
	tag := name[strings.LastIndex(name, ":")+1:]
	for _, img := range images {
		plat := img.Arch + "/" + img.Variant
		if img.Arch == "" || seen[plat] {
			return fmt.Errorf("%s: platform %q missing or twice", name, plat)
		}
		seen[plat] = true
		layer, err := layerTar(img.Files)
		if err != nil {
			return fmt.Errorf("layer of %s (%s): %w", name, img.Arch, err)
		}
		layerDigest := digest(layer)
		config, err := json.Marshal(struct {
			Created      time.Time `json:"created"`
			Architecture string    `json:"architecture"`
			Variant      string    `json:"variant,omitempty"`
			OS           string    `json:"os"`
			Config       Config    `json:"config"`
			RootFS       rootFS    `json:"rootfs"`
		}{Created: epoch, Architecture: img.Arch, Variant: img.Variant, OS: "linux", Config: img.Config,
			RootFS: rootFS{Type: "layers", DiffIDs: []string{layerDigest}}})
		if err != nil {
			return err
		}
		manifest, err := json.Marshal(struct {
			SchemaVersion int          `json:"schemaVersion"`
			MediaType     string       `json:"mediaType"`
			Config        descriptor   `json:"config"`
			Layers        []descriptor `json:"layers"`
		}{SchemaVersion: 2, MediaType: mediaManifest,
			Config: descriptor{MediaType: mediaConfig, Digest: digest(config), Size: int64(len(config))},
			Layers: []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: int64(len(layer))}}})
		if err != nil {
			return err
		}
		manifests = append(manifests, descriptor{
			MediaType: mediaManifest, Digest: digest(manifest), Size: int64(len(manifest)),
			Platform: &platform{Architecture: img.Arch, Variant: img.Variant, OS: "linux"},
			Annotations: map[string]string{
				"io.containerd.image.name":          name,
				"org.opencontainers.image.ref.name": tag,
			},
		})
		entries = append(entries, entry{blobPath(config), config}, entry{blobPath(manifest), manifest},
			entry{blobPath(layer), layer})
	}
	index, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{SchemaVersion: 2, MediaType: mediaIndex, Manifests: manifests})
	if err != nil {
		return err
	}
	entries = append([]entry{{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}, {"index.json", index}}, entries...)
	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	written := map[string]bool{}
	for _, e := range entries {
		if written[e.name] {
			continue // the same blob in two images
		}
		written[e.name] = true
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:")
}

// layerTar packs files, adding the parent directories they lack, in path
// order.
func layerTar(files []File) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(strings.TrimPrefix(f.Path, "/"))
		if p == "." || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("bad path %q", f.Path)
		}
		f.Path = p
		byPath[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{Name: p, Mode: int64(f.Mode.Perm()), ModTime: epoch, Format: tar.FormatPAX}
		if f.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		if f.Mode&fs.ModeSetuid != 0 { // the conformance suite's nonewprivs image
			h.Mode |= 0o4000
		}
		switch {
		case f.Mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case f.Mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
