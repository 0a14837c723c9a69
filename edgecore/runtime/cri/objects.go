package cri

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Objects gives the ConfigMaps and Secrets that pods use for environment
// variables and volumes (a missing object is (nil, nil)), and the Services
// of a namespace, for the service environment variables.
type Objects interface {
	ConfigMap(namespace, name string) (*corev1.ConfigMap, error)
	Secret(namespace, name string) (*corev1.Secret, error)
	Services(namespace string) ([]*corev1.Service, error)
}

// StoreObjects reads the objects from edgecore's store.
func StoreObjects(db *store.DB) Objects { return storeObjects{db: db} }

type storeObjects struct{ db *store.DB }

func (s storeObjects) get(kind protocol.Kind, namespace, name string) (data []byte, err error) {
	err = s.db.View(func(tx *store.Tx) error {
		o, err := tx.ObjectByName(kind, namespace, name)
		if o != nil {
			data = o.Data
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s %s/%s: %w", kind, namespace, name, err)
	}
	return data, nil
}

func (s storeObjects) ConfigMap(namespace, name string) (*corev1.ConfigMap, error) {
	b, err := s.get(protocol.KindConfigMap, namespace, name)
	if b == nil || err != nil {
		return nil, err
	}
	return protocol.DecodeConfigMap(b)
}

func (s storeObjects) Secret(namespace, name string) (*corev1.Secret, error) {
	b, err := s.get(protocol.KindSecret, namespace, name)
	if b == nil || err != nil {
		return nil, err
	}
	return protocol.DecodeSecret(b)
}

// Services reads the Services of namespace that the store holds (those of
// the namespaces the node runs pods in).
func (s storeObjects) Services(namespace string) ([]*corev1.Service, error) {
	var out []*corev1.Service
	err := s.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindService, func(o *protocol.Object) error {
			if o.Namespace != namespace {
				return nil
			}
			svc, err := protocol.DecodeService(o.Data)
			if err != nil {
				return fmt.Errorf("service %s/%s: %w", o.Namespace, o.Name, err)
			}
			out = append(out, svc)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read services of %s: %w", namespace, err)
	}
	return out, nil
}
