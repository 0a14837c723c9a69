package cloudcore

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset/fake"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/manifests/crds"
)

func deviceCRD(t *testing.T) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	all, err := crds.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		if c.Name == "devices.devices.tether.io" {
			return c
		}
	}
	t.Fatal("no devices CRD")
	return nil
}

// The tests use NewSimpleClientset: NewClientset's field-managed tracker has
// no schema for CustomResourceDefinitions and refuses to store them.
func TestInstallCRD(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	want := deviceCRD(t)

	t.Run("creates a missing one", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		if err := installCRD(t.Context(), client, want, log); err != nil {
			t.Fatal(err)
		}
		got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(t.Context(), want.Name, metav1.GetOptions{})
		if err != nil || got.Spec.Group != "devices.tether.io" {
			t.Fatalf("after install: %v, %v", got, err)
		}
	})

	t.Run("updates another spec, keeping labels, after a conflict", func(t *testing.T) {
		old := want.DeepCopy()
		old.Spec.Names.ShortNames = nil
		old.Labels = map[string]string{"keep": "me"}
		old.ResourceVersion = "5"
		client := fake.NewSimpleClientset(old)
		conflicts := 0
		client.PrependReactor("update", "customresourcedefinitions", func(k8stesting.Action) (bool, runtime.Object, error) {
			if conflicts++; conflicts == 1 {
				return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
					want.Name, errors.New("changed"))
			}
			return false, nil, nil
		})
		if err := installCRD(t.Context(), client, want, log); err != nil {
			t.Fatal(err)
		}
		got, _ := client.ApiextensionsV1().CustomResourceDefinitions().Get(t.Context(), want.Name, metav1.GetOptions{})
		if strings.Join(got.Spec.Names.ShortNames, ",") != "dev" || got.Labels["keep"] != "me" || conflicts != 2 {
			t.Fatalf("after install: short names %v, labels %v, %d update calls", got.Spec.Names.ShortNames, got.Labels, conflicts)
		}
	})

	t.Run("leaves one with versions it does not know", func(t *testing.T) {
		newer := want.DeepCopy()
		v1 := newer.Spec.Versions[0]
		v1.Name, v1.Storage = "v1", true
		newer.Spec.Versions[0].Storage = false
		newer.Spec.Versions = append(newer.Spec.Versions, v1)
		client := fake.NewSimpleClientset(newer)
		if err := installCRD(t.Context(), client, want, log); err != nil {
			t.Fatal(err)
		}
		for _, a := range client.Actions() {
			if a.GetVerb() == "update" {
				t.Fatalf("updated a CRD of a newer Tether: %v", a)
			}
		}
	})

	t.Run("forbidden says what to do", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		client.PrependReactor("*", "customresourcedefinitions", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"},
				want.Name, errors.New("RBAC: nope"))
		})
		err := installCRDs(t.Context(), client, log)
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "skipCRDInstall") || !strings.Contains(err.Error(), "rbac.yaml") {
			t.Fatalf("got %v", err)
		}
	})
}
