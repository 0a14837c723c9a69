//go:build integration

package cloudcore_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/controlplane"
)

// kustomizeFiles returns the files `kubectl apply -k dir` applies, in
// order: the resources of dir/kustomization.yaml, a directory among them
// standing for its own kustomization's files. Only plain resources are
// used here (no patches or generators); anything else is an error, so the
// test notices when the kustomization grows past what it checks.
func kustomizeFiles(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v (only resources are expected)", dir, err)
	}
	var files []string
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if fi, err := os.Stat(p); err != nil {
			t.Fatal(err)
		} else if fi.IsDir() {
			files = append(files, kustomizeFiles(t, p)...)
		} else {
			files = append(files, p)
		}
	}
	return files
}

// TestDeployManifests applies manifests/cloudcore (the kustomization:
// CRDs, rights, ConfigMap, Deployment, PodDisruptionBudget, Service) to a
// real API server with a server-side dry run, and checks that every object
// is accepted; with kubectl on the machine, also `kubectl apply -k
// --dry-run=server` itself.
func TestDeployManifests(t *testing.T) {
	ctx := t.Context()
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	rc := cp.RESTConfig()
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn := dynamic.NewForConfigOrDie(rc)

	var objs []*unstructured.Unstructured
	kinds := map[string]int{}
	for _, f := range kustomizeFiles(t, ".") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) == 0 {
				continue // comments only
			}
			objs = append(objs, u)
			kinds[u.GetKind()]++
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "CustomResourceDefinition", "ConfigMap",
		"Deployment", "PodDisruptionBudget", "Service", "ValidatingAdmissionPolicy"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the kustomization", k)
		}
	}

	// The namespaces for real (a dry run creates nothing for the objects
	// in them to go into), then everything dry.
	for _, pass := range []string{"namespaces", "all"} {
		for _, u := range objs {
			isNS := u.GetKind() == "Namespace"
			if pass == "namespaces" && !isNS {
				continue
			}
			gvk := u.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s %s: %v", gvk, u.GetName(), err)
			}
			ri := dyn.Resource(m.Resource)
			var res dynamic.ResourceInterface = ri
			if ns := u.GetNamespace(); ns != "" {
				res = ri.Namespace(ns)
			}
			b, err := u.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			opts := metav1.PatchOptions{FieldManager: "tether-test", FieldValidation: "Strict"}
			if pass == "all" {
				opts.DryRun = []string{metav1.DryRunAll}
			}
			_, err = res.Patch(ctx, u.GetName(), types.ApplyPatchType, b, opts)
			if err != nil {
				t.Errorf("server-side apply (%s) of %s %s/%s: %v", pass, gvk.Kind, u.GetNamespace(), u.GetName(), err)
			}
		}
	}
	t.Logf("%d objects accepted by a server-side dry run: %v", len(objs), kinds)
	// The dry run created nothing but the namespace.
	if _, err := dyn.Resource(deploymentsGVR).Namespace("tether-system").Get(ctx, "tether-cloudcore", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run left a Deployment behind: %v", err)
	}

	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not on PATH: `kubectl apply -k` itself not tried")
		return
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", cp.Kubeconfig(), "apply", "-k", ".",
		"--dry-run=server", "--server-side", "--field-manager=tether-test").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl apply -k --dry-run=server: %v\n%s", err, out)
	}
	if n := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; n != len(objs) {
		t.Errorf("kubectl applied %d objects, the files hold %d:\n%s", n, len(objs), out)
	}
}

var deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
