// Package testimages builds the container images the integration tests run,
// with no registry: a static pause program for pod sandboxes and a busybox
// image from Debian's busybox-static (/bin/busybox). Each is written as an
// OCI image layout in a tar file (WriteOCIArchive), ready for
// `ctr -n k8s.io images import`.
//
// The archives are deterministic (fixed timestamps and ownership), so the
// same inputs give the same digests.
package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed" // the pause program's source
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"time"
)

// Names of the images the builders write.
const (
	// Pause is the sandbox image: /pause, which sleeps, reaps children and
	// exits on SIGTERM.
	Pause = "tether.test/pause:1"
	// Busybox holds /bin/busybox and a symlink for every applet; its default
	// command is sh.
	Busybox = "tether.test/busybox:1"
)

// BusyboxBinary is where Debian's busybox-static installs busybox.
const BusyboxBinary = "/bin/busybox"

//go:embed pause/main.go
var pauseSource []byte

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
	OS           string `json:"os"`
}

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
)

// WriteOCIArchive writes an OCI image layout as a tar stream to w: one image
// for this machine's architecture, named name (a full reference such as
// "tether.test/busybox:1"), with one uncompressed layer of files.
func WriteOCIArchive(w io.Writer, name string, files []File, cfg Config) error {
	layer, err := layerTar(files)
	if err != nil {
		return fmt.Errorf("layer of %s: %w", name, err)
	}
	layerDigest := digest(layer)
	config, err := json.Marshal(struct {
		Created      time.Time `json:"created"`
		Architecture string    `json:"architecture"`
		OS           string    `json:"os"`
		Config       Config    `json:"config"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}{Created: epoch, Architecture: goruntime.GOARCH, OS: "linux", Config: cfg, RootFS: struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	}{Type: "layers", DiffIDs: []string{layerDigest}}})
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
	tag := name[strings.LastIndex(name, ":")+1:]
	index, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{SchemaVersion: 2, MediaType: mediaIndex, Manifests: []descriptor{{
		MediaType: mediaManifest, Digest: digest(manifest), Size: int64(len(manifest)),
		Platform: &platform{Architecture: goruntime.GOARCH, OS: "linux"},
		Annotations: map[string]string{
			"io.containerd.image.name":          name,
			"org.opencontainers.image.ref.name": tag,
		},
	}}})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
		{blobPath(layer), layer},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			return err
		}
	}
	return tw.Close()
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

// BuildPause compiles the pause program (statically, CGO_ENABLED=0, with the
// go command on PATH or in /usr/local/go/bin) and writes the Pause image's
// archive into dir. It returns the archive's path.
func BuildPause(ctx context.Context, dir string) (string, error) {
	src, err := os.MkdirTemp(dir, "pause-src-")
	if err != nil {
		return "", fmt.Errorf("build pause: %w", err)
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module pause\n\ngo 1.22\n"), 0o644); err != nil {
		return "", fmt.Errorf("build pause: %w", err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), pauseSource, 0o644); err != nil {
		return "", fmt.Errorf("build pause: %w", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(src, "pause")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-buildvcs=false", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pause: go build: %w: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", fmt.Errorf("build pause: %w", err)
	}
	return writeArchive(dir, "pause.tar", Pause, []File{{Path: "pause", Mode: 0o755, Data: data}},
		Config{Entrypoint: []string{"/pause"}})
}

// BuildBusybox writes the Busybox image's archive into dir from
// BusyboxBinary (Debian's busybox-static) and returns its path.
func BuildBusybox(ctx context.Context, dir string) (string, error) {
	data, err := os.ReadFile(BusyboxBinary)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("build busybox: %s is missing (apt-get install busybox-static)", BusyboxBinary)
	} else if err != nil {
		return "", fmt.Errorf("build busybox: %w", err)
	}
	if err := checkStatic(BusyboxBinary); err != nil {
		return "", fmt.Errorf("build busybox: %w", err)
	}
	out, err := exec.CommandContext(ctx, BusyboxBinary, "--list-full").Output()
	if err != nil {
		return "", fmt.Errorf("build busybox: list applets: %w", err)
	}
	files := []File{
		{Path: "bin/busybox", Mode: 0o755, Data: data},
		{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\n")},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "root", Mode: fs.ModeDir | 0o700},
		{Path: "var/www", Mode: fs.ModeDir | 0o755},
		{Path: "proc", Mode: fs.ModeDir | 0o555},
		{Path: "sys", Mode: fs.ModeDir | 0o555},
		{Path: "dev", Mode: fs.ModeDir | 0o755},
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "bin/busybox" {
			continue
		}
		files = append(files, File{Path: p, Mode: fs.ModeSymlink | 0o777, Link: "/bin/busybox"})
	}
	return writeArchive(dir, "busybox.tar", Busybox, files, Config{
		Cmd: []string{"sh"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
}

// checkStatic fails when the binary needs a dynamic loader, which the image
// does not hold (Debian's busybox package, rather than busybox-static).
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (apt-get install busybox-static)", path)
		}
	}
	return nil
}

func writeArchive(dir, file, name string, files []File, cfg Config) (string, error) {
	p := filepath.Join(dir, file)
	f, err := os.Create(p)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	if err := WriteOCIArchive(f, name, files, cfg); err != nil {
		f.Close()
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return p, nil
}
