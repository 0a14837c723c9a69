// Package crds holds Tether's CustomResourceDefinitions as YAML files, one
// per resource (devices.tether.io_devicemodels.yaml,
// devices.tether.io_devices.yaml), embedded so that cloudcore can install
// them and tests can apply them to a real API server. The Go types of the
// resources are in package devices/api; TestSchemaMatchesTypes checks that
// the two agree field for field.
package crds

import (
	"embed"
	"fmt"
	"io/fs"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

//go:embed devices.tether.io_*.yaml
var files embed.FS

// CRDs returns every embedded CRD, sorted by file name. A field the
// apiextensions v1 types do not know is an error, so a typo in the YAML
// fails here instead of being dropped.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) {
	names, err := fs.Glob(files, "devices.tether.io_*.yaml")
	if err != nil {
		return nil, err
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		crd := new(apiextensionsv1.CustomResourceDefinition)
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return nil, fmt.Errorf("crds: %s: %w", name, err)
		}
		crds = append(crds, crd)
	}
	return crds, nil
}
