package testimages

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"strings"
	"testing"
)

// The archive is an OCI layout whose blobs match their digests, whose index
// names the image, and which is the same every time.
func TestWriteOCIArchive(t *testing.T) {
	files := []File{{Path: "bin/hello", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")},
		{Path: "bin/hi", Mode: fs.ModeSymlink | 0o777, Link: "hello"}}
	var a, b bytes.Buffer
	if err := WriteOCIArchive(&a, "tether.test/hello:2", files, Config{Cmd: []string{"/bin/hello"}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteOCIArchive(&b, "tether.test/hello:2", files, Config{Cmd: []string{"/bin/hello"}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("two archives of the same image differ")
	}
	entries := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		entries[h.Name] = data
	}
	for name, data := range entries {
		if hexDigest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && hexDigest != "" {
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != hexDigest {
				t.Errorf("blob %s does not match its digest", name)
			}
		}
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(entries["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, entries["index.json"])
	}
	m := index.Manifests[0]
	if m.Annotations["io.containerd.image.name"] != "tether.test/hello:2" || m.Annotations["org.opencontainers.image.ref.name"] != "2" {
		t.Errorf("index annotations %v", m.Annotations)
	}
	if _, ok := entries["blobs/sha256/"+strings.TrimPrefix(m.Digest, "sha256:")]; !ok {
		t.Errorf("manifest %s missing", m.Digest)
	}
	if string(entries["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout %s", entries["oci-layout"])
	}
}
