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
	"context"
	"debug/elf"
	_ "embed" // the pause program's source
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/tether-edge/tether/ociimage"
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

// InClusterClient holds /incluster, the client-go program of
// testimages/incluster (BuildInClusterClient).
const InClusterClient = "tether.test/incluster:1"

// BuildInClusterClient compiles the client-go program of
// testimages/incluster statically (it is a package of this module, so the
// caller's working directory must be in the module, as a test's is) and
// returns the image's files: /incluster.
func BuildInClusterClient(ctx context.Context, dir string) ([]File, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(dir, "incluster")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin,
		"github.com/tether-edge/tether/testimages/incluster")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build incluster: go build: %w: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("build incluster: %w", err)
	}
	return []File{{Path: "incluster", Mode: 0o755, Data: data}}, nil
}

// BusyboxBinary is where Debian's busybox-static installs busybox.
const BusyboxBinary = "/bin/busybox"

//go:embed pause/main.go
var pauseSource []byte

// File is one entry of an image's single layer (ociimage.File).
type File = ociimage.File

// Config is the part of an OCI image configuration the tests need.
type Config = ociimage.Config

// WriteOCIArchive writes an OCI image layout as a tar stream to w: one image
// for this machine's architecture, named name (a full reference such as
// "tether.test/busybox:1"), with one uncompressed layer of files.
func WriteOCIArchive(w io.Writer, name string, files []File, cfg Config) error {
	return ociimage.Write(w, name, []ociimage.Image{{Arch: goruntime.GOARCH, Files: files, Config: cfg}})
}

// BuildPause compiles the pause program (PauseProgram) and writes the Pause
// image's archive into dir. It returns the archive's path.
func BuildPause(ctx context.Context, dir string) (string, error) {
	data, err := PauseProgram(ctx, dir)
	if err != nil {
		return "", err
	}
	return writeArchive(dir, "pause.tar", Pause, []File{{Path: "pause", Mode: 0o755, Data: data}},
		Config{Entrypoint: []string{"/pause"}})
}

// PauseProgram compiles the pause program (statically, CGO_ENABLED=0, with
// the go command on PATH or in /usr/local/go/bin) in a directory under dir
// and returns the binary.
func PauseProgram(ctx context.Context, dir string) ([]byte, error) {
	src, err := os.MkdirTemp(dir, "pause-src-")
	if err != nil {
		return nil, fmt.Errorf("build pause: %w", err)
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module pause\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, fmt.Errorf("build pause: %w", err)
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), pauseSource, 0o644); err != nil {
		return nil, fmt.Errorf("build pause: %w", err)
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
		return nil, fmt.Errorf("build pause: go build: %w: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("build pause: %w", err)
	}
	return data, nil
}

// BuildBusybox writes the Busybox image's archive into dir from
// BusyboxBinary (Debian's busybox-static) and returns its path.
func BuildBusybox(ctx context.Context, dir string) (string, error) {
	files, err := BusyboxFiles(ctx)
	if err != nil {
		return "", err
	}
	return writeArchive(dir, "busybox.tar", Busybox, files, Config{
		Cmd: []string{"sh"},
		Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	})
}

// BusyboxFiles is the Busybox image's layer: BusyboxBinary, a symlink for
// each of its applets, /etc/passwd and /etc/group, and the usual
// directories.
func BusyboxFiles(ctx context.Context) ([]File, error) {
	data, err := os.ReadFile(BusyboxBinary)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("build busybox: %s is missing (apt-get install busybox-static)", BusyboxBinary)
	} else if err != nil {
		return nil, fmt.Errorf("build busybox: %w", err)
	}
	if err := checkStatic(BusyboxBinary); err != nil {
		return nil, fmt.Errorf("build busybox: %w", err)
	}
	out, err := exec.CommandContext(ctx, BusyboxBinary, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("build busybox: list applets: %w", err)
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
	return files, nil
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
