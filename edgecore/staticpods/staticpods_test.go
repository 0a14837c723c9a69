package staticpods

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `apiVersion: v1
kind: Pod
metadata:
  name: pos
spec:
  containers:
  - name: pos
    image: busybox:1.36
`

func TestScan(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pos.yaml", good)
	write("dup.yaml", good)                                                  // the same pod twice
	write("typo.yaml", strings.Replace(good, "containers", "containres", 1)) // unknown field
	write("kind.yaml", strings.Replace(good, "kind: Pod", "kind: Deployment", 1))
	write("secret.yaml", good+"  volumes:\n  - name: s\n    secret:\n      secretName: x\n")
	write("notes.txt", "not a manifest")
	var bad []string
	changed := 0
	s := New(dir, "edge-1", func() { changed++ }, func(f string, err error) { bad = append(bad, filepath.Base(f)+": "+err.Error()) },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Scan()
	pods := s.Pods()
	if len(pods) != 1 || pods[0].Name != "pos-edge-1" || pods[0].Namespace != "default" || pods[0].Spec.NodeName != "edge-1" {
		t.Fatalf("pods %+v", pods)
	}
	p := pods[0]
	if p.UID == "" || p.Annotations[ConfigHashAnnotation] != string(p.UID) || p.Annotations[ConfigSourceAnnotation] != "file" {
		t.Fatalf("annotations %v uid %s", p.Annotations, p.UID)
	}
	if len(bad) != 4 || changed != 1 {
		t.Fatalf("bad %v, changed %d", bad, changed)
	}
	for _, want := range []string{"defined in", "containres", "want v1 Pod", "may not use secrets"} {
		if !strings.Contains(strings.Join(bad, "\n"), want) {
			t.Errorf("no report mentions %q: %v", want, bad)
		}
	}
	// A second scan of the same files reports and changes nothing.
	s.Scan()
	if len(bad) != 4 || changed != 1 {
		t.Fatalf("rescan: bad %v, changed %d", bad, changed)
	}
	// An edit gives a new UID.
	os.Remove(filepath.Join(dir, "dup.yaml"))
	write("pos.yaml", strings.Replace(good, "1.36", "1.37", 1))
	s.Scan()
	if changed != 2 {
		t.Fatalf("edit: changed %d", changed)
	}
	if s.Pods()[0].UID == p.UID {
		t.Fatal("edited manifest kept its UID")
	}
}
