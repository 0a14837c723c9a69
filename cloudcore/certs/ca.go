// Package certs holds cloudcore's certificate authority and the hub's serving
// certificate.
//
// The CA lives in one Kubernetes Secret (by default tether-system/tether-ca,
// type kubernetes.io/tls). Every replica loads it; the first to find it
// missing creates it with a Create call, which the API server lets only one
// caller win, so two replicas started together end with one CA. A CA that is
// present is never regenerated: every edge trusts it.
//
// The hub's serving certificate is issued by that CA in memory at start,
// renewed when two thirds of its life have passed, and served through
// tls.Config.GetCertificate, so a renewal needs no restart and an expired
// certificate is never reused; a restart with other names issues a
// certificate for them. An operator's own certificate files are reloaded
// when they change.
package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/pki"
)

// Defaults of where the CA Secret is.
const (
	DefaultNamespace = "tether-system"
	DefaultCASecret  = "tether-ca"
)

// LoadOrCreateCA returns the CA kept in the Secret namespace/name, creating
// it if the Secret does not exist. A Secret that exists but holds no usable
// CA is an error: replacing it would cut off every edge.
func LoadOrCreateCA(ctx context.Context, client kubernetes.Interface, namespace, name string, log *slog.Logger) (*pki.CA, error) {
	secrets := client.CoreV1().Secrets(namespace)
	for attempt := 0; attempt < 3; attempt++ {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			ca, err := pki.ParseCA(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
			if err != nil {
				return nil, fmt.Errorf("ca secret %s/%s: %w (fix or delete it; a new CA means every edge joins again)", namespace, name, err)
			}
			return ca, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("ca secret %s/%s: %w", namespace, name, err)
		}
		ca, err := pki.NewCA("tether-ca")
		if err != nil {
			return nil, err
		}
		kp, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Labels: map[string]string{"app.kubernetes.io/part-of": "tether"}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: ca.CertPEM(), corev1.TLSPrivateKeyKey: kp},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			log.Info("created the CA", slog.String("secret", namespace+"/"+name), slog.String("hash", pki.Hash(ca.Cert)))
			return ca, nil
		case apierrors.IsAlreadyExists(err):
			continue // another replica won: load its CA
		case apierrors.IsNotFound(err):
			// The namespace is missing: a cloudcore run with an admin's
			// kubeconfig (the demo) makes it; in the cluster it exists,
			// holding cloudcore's ServiceAccount.
			_, nerr := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
				metav1.CreateOptions{})
			if nerr != nil && !apierrors.IsAlreadyExists(nerr) {
				return nil, fmt.Errorf("ca secret %s/%s: namespace %s does not exist and cannot be created: %w",
					namespace, name, namespace, nerr)
			}
			continue
		default:
			return nil, fmt.Errorf("create ca secret %s/%s: %w", namespace, name, err)
		}
	}
	return nil, errors.New("ca secret: created and deleted under us three times")
}
