package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
)

// TestWriteMultiPlatform checks the layout of a two-platform archive: an
// index with one manifest per platform, each with its config and layer
// blobs present, and the same bytes for the same input.
func TestWriteMultiPlatform(t *testing.T) {
	images := []Image{
		{Arch: "amd64", Files: []File{{Path: "/cloudcore", Mode: 0o755, Data: []byte("amd64 binary")}},
			Config: Config{Entrypoint: []string{"/cloudcore"}, User: "65532:65532"}},
		{Arch: "arm64", Files: []File{{Path: "/cloudcore", Mode: 0o755, Data: []byte("arm64 binary")},
			{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777}},
			Config: Config{Entrypoint: []string{"/cloudcore"}}},
		{Arch: "arm", Variant: "v7", Files: []File{{Path: "/cloudcore", Mode: 0o755, Data: []byte("arm binary")}}},
	}
	var a, b bytes.Buffer
	if err := Write(&a, "tether.local/cloudcore:v1", images); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, "tether.local/cloudcore:v1", images); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same images differ")
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := files[h.Name]; dup {
			t.Fatalf("%s twice in the archive", h.Name)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 3 {
		t.Fatalf("%d manifests, want 3", len(index.Manifests))
	}
	blob := func(d string) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok || digest(b) != d {
			t.Fatalf("blob %s missing or wrong", d)
		}
		return b
	}
	for i, m := range index.Manifests {
		want := images[i]
		if m.Platform == nil || m.Platform.Architecture != want.Arch || m.Platform.Variant != want.Variant || m.Platform.OS != "linux" {
			t.Errorf("manifest %d platform %+v, want %s/%s", i, m.Platform, want.Arch, want.Variant)
		}
		if m.Annotations["io.containerd.image.name"] != "tether.local/cloudcore:v1" {
			t.Errorf("manifest %d: name %q", i, m.Annotations["io.containerd.image.name"])
		}
		var man struct {
			Config descriptor   `json:"config"`
			Layers []descriptor `json:"layers"`
		}
		if err := json.Unmarshal(blob(m.Digest), &man); err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Architecture string `json:"architecture"`
			Variant      string `json:"variant"`
			Config       Config `json:"config"`
		}
		if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Architecture != want.Arch || cfg.Variant != want.Variant || strings.Join(cfg.Config.Entrypoint, " ") != strings.Join(want.Config.Entrypoint, " ") {
			t.Errorf("manifest %d config %+v", i, cfg)
		}
		layer := tar.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
		var got string
		for {
			h, err := layer.Next()
			if err != nil {
				break
			}
			if h.Name == "cloudcore" {
				data, _ := io.ReadAll(layer)
				got = string(data)
			}
		}
		if got != string(want.Files[0].Data) {
			t.Errorf("manifest %d: /cloudcore holds %q", i, got)
		}
	}
	for _, bad := range [][]Image{nil, {{Arch: ""}}, {{Arch: "amd64"}, {Arch: "amd64"}},
		{{Arch: "amd64", Files: []File{{Path: "../etc/passwd"}}}}} {
		if err := Write(io.Discard, "x:1", bad); err == nil {
			t.Errorf("Write(%+v) accepted", bad)
		}
	}
}

// TestLayerModeBits checks that the sticky and setuid bits reach the
// layer's tar headers (/tmp; the setuid nnp program of the conformance
// suite's nonewprivs image).
func TestLayerModeBits(t *testing.T) {
	b, err := layerTar([]File{
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "usr/local/bin/nnp", Mode: fs.ModeSetuid | 0o755, Data: []byte("x")},
		{Path: "bin/plain", Mode: 0o755, Data: []byte("y")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"tmp/": 0o1777, "usr/local/bin/nnp": 0o4755, "bin/plain": 0o755}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := want[h.Name]; ok {
			if h.Mode != m {
				t.Errorf("%s: mode %o, want %o", h.Name, h.Mode, m)
			}
			delete(want, h.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing from the layer: %v", want)
	}
}
