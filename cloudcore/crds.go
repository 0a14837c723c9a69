package cloudcore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"

	"github.com/tether-edge/tether/manifests/crds"
)

// crdEstablishTimeout bounds the wait for the API server to serve a CRD
// cloudcore created or updated.
const crdEstablishTimeout = time.Minute

// installCRDs creates the CustomResourceDefinitions of manifests/crds that
// are missing, updates those whose spec differs, and waits until the API
// server serves every one (Established). A CRD that has versions this build
// does not know (a newer Tether installed it) is left alone. A refusal for
// lack of rights fails with an error that says what to grant or set.
func installCRDs(ctx context.Context, client apiextensions.Interface, log *slog.Logger) error {
	all, err := crds.CRDs()
	if err != nil {
		return fmt.Errorf("install CRDs: %w", err)
	}
	for _, want := range all {
		if err := installCRD(ctx, client, want, log); err != nil {
			if apierrors.IsForbidden(err) {
				return fmt.Errorf("install CRD %s: %w; cloudcore needs get, create and update on "+
					"customresourcedefinitions.apiextensions.k8s.io (manifests/cloudcore/rbac.yaml), or set "+
					"skipCRDInstall and apply manifests/crds yourself", want.Name, err)
			}
			return fmt.Errorf("install CRD %s: %w", want.Name, err)
		}
	}
	for _, want := range all {
		if err := waitEstablished(ctx, client, want.Name); err != nil {
			return fmt.Errorf("install CRD %s: %w", want.Name, err)
		}
	}
	return nil
}

func installCRD(ctx context.Context, client apiextensions.Interface, want *apiextensionsv1.CustomResourceDefinition, log *slog.Logger) error {
	api := client.ApiextensionsV1().CustomResourceDefinitions()
	return retry.OnError(retry.DefaultRetry, func(err error) bool {
		// Another cloudcore may create or update it at the same time.
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		cur, err := api.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if _, err := api.Create(ctx, want, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
				return err
			}
			log.Info("CRD created", slog.String("crd", want.Name))
			return nil
		}
		if err != nil {
			return err
		}
		if unknown := unknownVersions(cur, want); len(unknown) > 0 {
			log.Warn("CRD has versions this cloudcore does not know: left as it is",
				slog.String("crd", want.Name), slog.Any("versions", unknown))
			return nil
		}
		upd := cur.DeepCopy()
		upd.Spec = want.Spec
		if upd.Labels == nil && len(want.Labels) > 0 {
			upd.Labels = map[string]string{}
		}
		maps.Copy(upd.Labels, want.Labels)
		if upd.Annotations == nil && len(want.Annotations) > 0 {
			upd.Annotations = map[string]string{}
		}
		maps.Copy(upd.Annotations, want.Annotations)
		// An update that changes nothing is not written: the
		// resourceVersion stays.
		got, err := api.Update(ctx, upd, metav1.UpdateOptions{FieldManager: fieldManager})
		if err != nil {
			return err
		}
		if got.ResourceVersion != cur.ResourceVersion {
			log.Info("CRD updated", slog.String("crd", want.Name))
		} else {
			log.Debug("CRD up to date", slog.String("crd", want.Name))
		}
		return nil
	})
}

// fieldManager names cloudcore in managedFields.
const fieldManager = "tether-cloudcore"

// unknownVersions lists the versions cur has and want does not.
func unknownVersions(cur, want *apiextensionsv1.CustomResourceDefinition) []string {
	var out []string
	for _, v := range cur.Spec.Versions {
		if !slices.ContainsFunc(want.Spec.Versions, func(w apiextensionsv1.CustomResourceDefinitionVersion) bool {
			return w.Name == v.Name
		}) {
			out = append(out, v.Name)
		}
	}
	return out
}

// waitEstablished waits until the CRD is Established, failing early if its
// names were not accepted.
func waitEstablished(ctx context.Context, client apiextensions.Interface, name string) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, crdEstablishTimeout, true,
		func(ctx context.Context) (bool, error) {
			crd, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsForbidden(err) {
					return false, err
				}
				last = err
				return false, nil
			}
			for _, c := range crd.Status.Conditions {
				switch {
				case c.Type == apiextensionsv1.NamesAccepted && c.Status == apiextensionsv1.ConditionFalse:
					return false, fmt.Errorf("names not accepted: %s", c.Message)
				case c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue:
					return true, nil
				}
			}
			return false, nil
		})
	if err != nil && last != nil && !errors.Is(err, last) {
		return fmt.Errorf("not established: %w (last error: %w)", err, last)
	}
	if err != nil {
		return fmt.Errorf("not established: %w", err)
	}
	return nil
}
