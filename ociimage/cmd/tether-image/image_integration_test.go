//go:build integration

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
)

// TestCloudcoreImageRuns builds cloudcore as `make image` does (static,
// this machine's platform), writes its image, imports it into a private
// containerd with ctr and runs it there: the image's cloudcore starts,
// parses its flags and prints its usage.
func TestCloudcoreImageRuns(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("containerd needs root")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloudcore-linux-"+runtime.GOARCH)
	build := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", bin, "github.com/tether-edge/tether/cloudcore/cmd/cloudcore")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	const ref = "tether.local/cloudcore:test"
	tarball := filepath.Join(dir, "cloudcore-image.tar")
	if err := run([]string{"--name", ref, "--out", tarball, "--path", "/cloudcore",
		"linux/" + runtime.GOARCH + "=" + bin}); err != nil {
		t.Fatal(err)
	}
	ctd, err := critest.Start(t.Context(), critest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctd.Stop() })
	ctr := func(args ...string) (string, error) {
		out, err := exec.CommandContext(t.Context(), "ctr", append([]string{"--address", ctd.Endpoint, "-n", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := ctr("images", "import", tarball); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	// --help exits 2 after printing the flags (flag.ErrHelp).
	out, err := ctr("run", "--rm", ref, "tether-image-test", "/cloudcore", "--help")
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 2) {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "-config") || !strings.Contains(out, "-kubeconfig") {
		t.Fatalf("cloudcore --help in the image printed:\n%s", out)
	}
	t.Logf("cloudcore ran from %s (%s, image archive %d KiB)", ref, runtime.GOARCH, fileSize(t, tarball)>>10)
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
