// Package cloudcore holds cloudcore's rights as YAML files, embedded so
// that tests and tools can apply them to a real API server: rbac.yaml (the
// Namespace, the ServiceAccount tether-system/tether-cloudcore, its
// ClusterRole and Roles) and policy.yaml (the ValidatingAdmissionPolicies
// that say what RBAC cannot: edge nodes only, mirror pods only, join tokens
// only). Both stay applyable with kubectl apply -f. deploy.yaml runs
// cloudcore in the cluster and kustomization.yaml puts it all together with
// the CRDs: kubectl apply -k manifests/cloudcore (deploy_integration_test.go
// applies it to a real API server with a server-side dry run).
//
// rbac_integration_test.go checks them against a real API server: what the
// account may do, and, each by a real request, what it may not.
package cloudcore

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// names are the manifests, in the order Apply applies them.
var names = []string{"rbac.yaml", "policy.yaml"}

// ServiceAccount is cloudcore's user name, the subject of the rules and
// policies.
const ServiceAccount = "system:serviceaccount:tether-system:tether-cloudcore"

//go:embed rbac.yaml policy.yaml
var files embed.FS

// Objects returns the objects of rbac.yaml and policy.yaml, in order. A
// field the Kubernetes types do not know is an error, so a typo fails here
// instead of being dropped.
func Objects() ([]runtime.Object, error) {
	var objs []runtime.Object
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			_, gvk, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			obj, err := scheme.Scheme.New(*gvk)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", name, gvk.Kind, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// Apply creates the objects of rbac.yaml and policy.yaml, or replaces
// those that exist. An object the API server answers NotFound for (a Role
// in kube-node-lease, which the API server makes just after it started) is
// retried until ctx ends.
func Apply(ctx context.Context, client kubernetes.Interface) error {
	objs, err := Objects()
	if err != nil {
		return err
	}
	for _, obj := range objs {
		for {
			err = apply(ctx, client, obj)
			if err == nil || !apierrors.IsNotFound(err) {
				break
			}
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func apply(ctx context.Context, client kubernetes.Interface, obj runtime.Object) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		err = upsert(ctx, o, client.CoreV1().Namespaces())
	case *corev1.ServiceAccount:
		err = upsert(ctx, o, client.CoreV1().ServiceAccounts(o.Namespace))
	case *rbacv1.ClusterRole:
		err = upsert(ctx, o, client.RbacV1().ClusterRoles())
	case *rbacv1.ClusterRoleBinding:
		err = upsert(ctx, o, client.RbacV1().ClusterRoleBindings())
	case *rbacv1.Role:
		err = upsert(ctx, o, client.RbacV1().Roles(o.Namespace))
	case *rbacv1.RoleBinding:
		err = upsert(ctx, o, client.RbacV1().RoleBindings(o.Namespace))
	case *admissionregistrationv1.ValidatingAdmissionPolicy:
		err = upsert(ctx, o, client.AdmissionregistrationV1().ValidatingAdmissionPolicies())
	case *admissionregistrationv1.ValidatingAdmissionPolicyBinding:
		err = upsert(ctx, o, client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings())
	default:
		return fmt.Errorf("apply: unexpected %T", obj)
	}
	if err != nil {
		return fmt.Errorf("apply %T %s: %w", obj, objectName(obj), err)
	}
	return nil
}

// object is what upsert needs of a typed object.
type object interface {
	runtime.Object
	metav1.Object
}

// typedClient is what upsert needs of a typed client.
type typedClient[T object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
}

func upsert[T object](ctx context.Context, o T, c typedClient[T]) error {
	_, err := c.Create(ctx, o, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := c.Get(ctx, o.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	o.SetResourceVersion(cur.GetResourceVersion())
	_, err = c.Update(ctx, o, metav1.UpdateOptions{})
	return err
}

// objectName returns obj's namespace/name, or name.
func objectName(obj runtime.Object) string {
	m, ok := obj.(metav1.Object)
	switch {
	case !ok:
		return ""
	case m.GetNamespace() != "":
		return m.GetNamespace() + "/" + m.GetName()
	}
	return m.GetName()
}
