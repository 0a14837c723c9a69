package critest

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tether-edge/tether/testimages"
)

// The registry serves pulls only: a push, a delete, a path outside /v2/,
// another repository's blob and an oversized name are refused.
func TestRegistryReadOnly(t *testing.T) {
	reg, err := StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if err := reg.Add("registry.k8s.io/a/b:1", []testimages.File{{Path: "f", Mode: 0o644, Data: []byte("x")}}, testimages.Config{}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Add("no-slash:1", nil, testimages.Config{}); err == nil {
		t.Error("Add of a name without a registry accepted")
	}
	hc := &http.Client{Transport: &http.Transport{}} // no proxy
	do := func(method, path string) (int, string, http.Header) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, reg.URL+path, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, body, h := do("GET", "/v2/a/b/manifests/1")
	if code != http.StatusOK || !strings.HasPrefix(h.Get("Docker-Content-Digest"), "sha256:") ||
		h.Get("Content-Type") != "application/vnd.oci.image.index.v1+json" {
		t.Fatalf("GET manifest: %d %v %s", code, h, body)
	}
	digest := h.Get("Docker-Content-Digest")
	if code, _, _ := do("HEAD", "/v2/a/b/manifests/"+digest); code != http.StatusOK {
		t.Errorf("HEAD manifest by digest: %d", code)
	}
	if code, _, _ := do("GET", "/v2/"); code != http.StatusOK {
		t.Errorf("GET /v2/: %d", code)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"PUT", "/v2/a/b/manifests/2", http.StatusMethodNotAllowed},
		{"POST", "/v2/a/b/blobs/uploads/", http.StatusMethodNotAllowed},
		{"DELETE", "/v2/a/b/manifests/1", http.StatusMethodNotAllowed},
		{"PATCH", "/v2/a/b/blobs/uploads/x", http.StatusMethodNotAllowed},
		{"GET", "/v2/a/b/manifests/2", http.StatusNotFound},
		{"GET", "/v2/c/d/manifests/1", http.StatusNotFound},
		{"GET", "/v2/c/d/manifests/" + digest, http.StatusNotFound}, // another repository
		{"GET", "/v2/c/d/blobs/" + digest, http.StatusNotFound},
		{"GET", "/v2/a/b/blobs/1", http.StatusNotFound}, // a tag is not a blob
		{"GET", "/a/b/manifests/1", http.StatusNotFound},
		{"GET", "/v2/_catalog", http.StatusNotFound},
		{"GET", "/v2/" + strings.Repeat("a", 300) + "/manifests/1", http.StatusNotFound},
	} {
		if code, body, _ := do(c.method, c.path); code != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}
	if n := reg.Pulls("registry.k8s.io/a/b:1"); n != 3 { // GET, HEAD, the 404 of tag 2
		t.Errorf("Pulls = %d, want 3", n)
	}
}
