//go:build integration

package critest

import (
	"os"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/testimages"
)

func TestStartStop(t *testing.T) {
	c, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", c.Dir, err)
	}
}

// A pull by a registry.k8s.io name goes, through the mirror, to the
// loopback registry and gets its image; a name of another registry, or of
// the mirrored one once the mirror is removed, still fails at
// NoRegistry's closed port; an image the registry lacks fails as not
// found.
func TestRegistryMirror(t *testing.T) {
	const name = "registry.k8s.io/tether-test/mirrored:1"
	c, reg := startWithRegistry(t, name, "from the loopback registry\n")
	if err := c.Mirror("registry.k8s.io", reg.URL); err != nil {
		t.Fatal(err)
	}
	img := imageService(t, c)
	pull := func(name string) (string, error) {
		resp, err := img.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: name}})
		return resp.GetImageRef(), err
	}
	ref, err := pull(name)
	if err != nil {
		t.Fatalf("pull %s through the mirror: %v (containerd log: %s)", name, err, tail(c.Log))
	}
	if reg.Pulls(name) == 0 {
		t.Errorf("pull of %s succeeded (%s) without asking the registry", name, ref)
	}
	st, err := img.ImageStatus(t.Context(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name}})
	if err != nil || st.Image == nil || st.Image.Id != ref {
		t.Errorf("image status of %s: %v %v, want id %s", name, st.GetImage(), err, ref)
	}
	// Not in the registry: not found there (no other endpoint tried).
	if _, err := pull("registry.k8s.io/tether-test/absent:1"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("pull of an image the registry lacks: %v, want not found", err)
	}
	// Another registry keeps the closed port.
	if _, err := pull("gcr.io/tether-test/mirrored:1"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Errorf("pull from gcr.io: %v, want a failure at the closed port 127.0.0.1:9", err)
	}
	// The mirror removed, registry.k8s.io is closed again.
	if err := c.Mirror("registry.k8s.io", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := pull("registry.k8s.io/tether-test/mirrored:2"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
		t.Errorf("pull after the mirror is removed: %v, want a failure at the closed port", err)
	}
	// Only loopback servers, named by IP (no name lookup).
	for _, bad := range []string{"http://registry.example:5000", "http://localhost:5000", "https://127.0.0.1:5000",
		"http://10.0.0.1:5000", "http://127.0.0.1", "http://127.0.0.1:5000/v2"} {
		if err := c.Mirror("registry.k8s.io", bad); err == nil {
			t.Errorf("Mirror(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "_default", "../x", "a/b"} {
		if err := c.Mirror(bad, reg.URL); err == nil {
			t.Errorf("Mirror host %q accepted", bad)
		}
	}
	if strings.Contains(readFile(t, c.Log), "registry.k8s.io: no such host") {
		t.Errorf("containerd looked registry.k8s.io up: %s", tail(c.Log))
	}
}

func readFile(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A private repository behind the mirror: a pull without credentials, or
// with wrong ones, gets 401; one with the right credentials and no
// ServerAddress (as the kubelet and edgecore send them) gets the image.
// Credentials naming the mirrored registry (ServerAddress gcr.io) are not
// given to the mirror by containerd: edgecore's pullAuth leaves
// ServerAddress empty for that reason.
func TestRegistryMirrorPrivate(t *testing.T) {
	const name = "gcr.io/tether-test/private:1"
	c, reg := startWithRegistry(t, name, "private\n")
	if err := reg.RequireAuth(name, "_json_key", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mirror("gcr.io", reg.URL); err != nil {
		t.Fatal(err)
	}
	img := imageService(t, c)
	for _, tc := range []struct {
		what string
		auth *runtimeapi.AuthConfig
		ok   bool
	}{
		{"no credentials", nil, false},
		{"a wrong password", &runtimeapi.AuthConfig{Username: "_json_key", Password: "guess"}, false},
		{"a wrong user", &runtimeapi.AuthConfig{Username: "admin", Password: "s3cret"}, false},
		{"credentials for gcr.io by name", &runtimeapi.AuthConfig{Username: "_json_key", Password: "s3cret", ServerAddress: "gcr.io"}, false},
		{"the credentials", &runtimeapi.AuthConfig{Username: "_json_key", Password: "s3cret"}, true},
	} {
		_, err := img.PullImage(t.Context(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: name}, Auth: tc.auth})
		switch {
		case tc.ok && err != nil:
			t.Errorf("pull with %s: %v", tc.what, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "401")):
			t.Errorf("pull with %s: %v, want 401", tc.what, err)
		}
	}
}

// imageService is c's CRI image service, its connection closed at the
// test's end.
func imageService(t *testing.T, c *Containerd) runtimeapi.ImageServiceClient {
	t.Helper()
	conn, err := c.client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewImageServiceClient(conn)
}

// startWithRegistry starts a containerd with NoRegistry and a loopback
// registry holding image name, one file /hello with content; both stop
// at the test's end.
func startWithRegistry(t *testing.T, name, content string) (*Containerd, *Registry) {
	t.Helper()
	c, err := Start(t.Context(), Options{NoRegistry: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	reg, err := StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	files := []testimages.File{{Path: "hello", Mode: 0o644, Data: []byte(content)}}
	if err := reg.Add(name, files, testimages.Config{Cmd: []string{"/hello"}}); err != nil {
		t.Fatal(err)
	}
	return c, reg
}
