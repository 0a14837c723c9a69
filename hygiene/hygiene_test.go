package hygiene

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tether-edge/tether"

type pkg struct {
	ImportPath string
	Doc        string
	Name       string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "-deps=false", module+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(out)
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		}
	}
}

func TestDependencyRules(t *testing.T) {
	rules := []struct {
		from      string // package path prefix below the module
		forbidden []string
	}{
		{"protocol", []string{""}}, // nothing of ours
		{"edgecore", []string{"cloudcore", "controlplane"}},
		{"cloudcore", []string{"edgecore", "controlplane"}},
		{"devices/mqtt", []string{""}},
		{"devices/api", []string{""}},
		{"devices/twin", []string{"cloudcore", "edgecore", "controlplane", "devices/api"}},
		{"devices/modbus", []string{""}},
		{"devices/broker", []string{""}},
		// A mapper is its own process: it meets the edge on MQTT and the
		// metaserver's HTTP API only.
		{"devices/mapper", []string{"cloudcore", "edgecore", "controlplane", "devices/twin"}},
		{"devices/cmd", []string{"cloudcore", "edgecore", "controlplane", "devices/twin"}},
	}
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, r := range rules {
			if rel != r.from && !strings.HasPrefix(rel, r.from+"/") {
				continue
			}
			for _, d := range p.Deps {
				if !strings.HasPrefix(d, module+"/") {
					continue
				}
				drel := strings.TrimPrefix(d, module+"/")
				for _, f := range r.forbidden {
					if f == "" || drel == f || strings.HasPrefix(drel, f+"/") {
						t.Errorf("%s imports %s", rel, drel)
					}
				}
			}
		}
	}
}

func TestNoCatchAllPackageNames(t *testing.T) {
	for _, p := range listPackages(t) {
		switch p.Name {
		case "util", "utils", "common", "helper", "helpers", "misc":
			t.Errorf("%s: package name %q says nothing; name it for what it does", p.ImportPath, p.Name)
		}
	}
}
