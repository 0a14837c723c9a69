package crds_test

import (
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/manifests/crds"
)

func load(t *testing.T) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	all, err := crds.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, c := range all {
		byKind[c.Spec.Names.Kind] = c
	}
	if len(all) != 2 || byKind[api.DeviceKind] == nil || byKind[api.DeviceModelKind] == nil {
		t.Fatalf("CRDs() = %d CRDs %v, want Device and DeviceModel", len(all), byKind)
	}
	return byKind
}

// schemaOf returns the one version's schema, checking names against
// package api.
func schemaOf(t *testing.T, crd *apiextensionsv1.CustomResourceDefinition, plural string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	if crd.Spec.Group != api.GroupName || crd.Spec.Names.Plural != plural || crd.Name != plural+"."+api.GroupName ||
		crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("%s: group %s, plural %s, scope %s", crd.Name, crd.Spec.Group, crd.Spec.Names.Plural, crd.Spec.Scope)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != api.Version {
		t.Fatalf("%s: versions %v, want only %s", crd.Name, crd.Spec.Versions, api.Version)
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema
}

// TestSchemaMatchesTypes walks the Go types and the CRD schemas together:
// every JSON field of the types is in the schema with the matching type, and
// the schema has no field the types lack (the typed client would drop it).
func TestSchemaMatchesTypes(t *testing.T) {
	byKind := load(t)
	match(t, "DeviceModel", reflect.TypeFor[api.DeviceModel](), schemaOf(t, byKind[api.DeviceModelKind], api.DeviceModelsResource))
	match(t, "Device", reflect.TypeFor[api.Device](), schemaOf(t, byKind[api.DeviceKind], api.DevicesResource))
}

func match(t *testing.T, path string, typ reflect.Type, s *apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	if s == nil {
		t.Errorf("%s: no schema", path)
		return
	}
	if typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	want := map[reflect.Kind]string{
		reflect.String: "string", reflect.Int64: "integer", reflect.Bool: "boolean",
		reflect.Struct: "object", reflect.Map: "object", reflect.Slice: "array",
	}[typ.Kind()]
	if want == "" {
		t.Errorf("%s: Go kind %s has no JSON schema type here", path, typ.Kind())
		return
	}
	if s.Type != want {
		t.Errorf("%s: schema type %q, Go type %s wants %q", path, s.Type, typ, want)
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		match(t, path+"[]", typ.Elem(), s.Items.Schema)
	case reflect.Map:
		if typ == reflect.TypeFor[api.ConfigData]() {
			if s.XPreserveUnknownFields == nil || !*s.XPreserveUnknownFields {
				t.Errorf("%s: free-form ConfigData needs x-kubernetes-preserve-unknown-fields", path)
			}
			return
		}
		if s.AdditionalProperties == nil || s.AdditionalProperties.Schema == nil {
			t.Errorf("%s: map without additionalProperties", path)
			return
		}
		match(t, path+"{}", typ.Elem(), s.AdditionalProperties.Schema)
	case reflect.Struct:
		fields := jsonFields(typ)
		if path == "DeviceModel" || path == "Device" {
			// ObjectMeta's schema is the API server's, not ours.
			if s.Properties["metadata"].Type != "object" {
				t.Errorf("%s.metadata: want type object", path)
			}
			delete(fields, "metadata")
			delete(s.Properties, "metadata")
		}
		for name, f := range fields {
			sub, ok := s.Properties[name]
			if !ok {
				t.Errorf("%s.%s: in the Go type, not in the schema", path, name)
				continue
			}
			match(t, path+"."+name, f, &sub)
		}
		for name := range s.Properties {
			if _, ok := fields[name]; !ok {
				t.Errorf("%s.%s: in the schema, not in the Go type", path, name)
			}
		}
	}
}

// jsonFields returns a struct's JSON fields by name, inlined structs
// flattened.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if name == "" && strings.Contains(opts, "inline") {
			for n, ft := range jsonFields(f.Type) {
				out[n] = ft
			}
			continue
		}
		out[name] = f.Type
	}
	return out
}

// at follows a path of property names through a schema; "[]" steps into
// array items.
func at(t *testing.T, s *apiextensionsv1.JSONSchemaProps, path ...string) *apiextensionsv1.JSONSchemaProps {
	t.Helper()
	for _, p := range path {
		if p == "[]" {
			s = s.Items.Schema
			continue
		}
		sub, ok := s.Properties[p]
		if !ok {
			t.Fatalf("no %s in schema at %v", p, path)
		}
		s = &sub
	}
	return s
}

// TestSchemaLimitsMatchGo checks that the limits, patterns and enums of the
// schemas are the ones package api validates with, so the cloud and the
// edge refuse the same things.
func TestSchemaLimitsMatchGo(t *testing.T) {
	byKind := load(t)
	model := schemaOf(t, byKind[api.DeviceModelKind], api.DeviceModelsResource)
	device := schemaOf(t, byKind[api.DeviceKind], api.DevicesResource)

	check := func(what string, s *apiextensionsv1.JSONSchemaProps, pattern string, maxLength int64) {
		t.Helper()
		if s.Pattern != pattern {
			t.Errorf("%s: pattern %q, package api has %q", what, s.Pattern, pattern)
		}
		if s.MaxLength == nil || *s.MaxLength != maxLength {
			t.Errorf("%s: maxLength %s, package api has %d", what, num(s.MaxLength), maxLength)
		}
	}
	check("model property name", at(t, model, "spec", "properties", "[]", "name"), api.PropertyNamePattern, api.MaxPropertyNameLength)
	check("device property name", at(t, device, "spec", "properties", "[]", "name"), api.PropertyNamePattern, api.MaxPropertyNameLength)
	check("twin property name", at(t, device, "status", "twins", "[]", "propertyName"), api.PropertyNamePattern, api.MaxPropertyNameLength)
	check("model protocol", at(t, model, "spec", "protocol"), api.ProtocolNamePattern, api.MaxProtocolNameLength)
	check("device protocolName", at(t, device, "spec", "protocol", "protocolName"), api.ProtocolNamePattern, api.MaxProtocolNameLength)
	check("visitors protocolName", at(t, device, "spec", "properties", "[]", "visitors", "protocolName"), api.ProtocolNamePattern, api.MaxProtocolNameLength)
	for _, b := range []string{"minimum", "maximum"} {
		if got := at(t, model, "spec", "properties", "[]", b).Pattern; got != api.NumberPattern {
			t.Errorf("%s: pattern %q, package api has %q", b, got, api.NumberPattern)
		}
	}
	for _, v := range [][]string{
		{"spec", "properties", "[]", "desired", "value"},
		{"status", "twins", "[]", "reported", "value"},
		{"status", "twins", "[]", "observedDesired", "value"},
	} {
		if s := at(t, device, v...); s.MaxLength == nil || *s.MaxLength != api.MaxValueLength {
			t.Errorf("%v: maxLength %s, package api has %d", v, num(s.MaxLength), api.MaxValueLength)
		}
	}
	for _, l := range []*apiextensionsv1.JSONSchemaProps{
		at(t, model, "spec", "properties"), at(t, device, "spec", "properties"), at(t, device, "status", "twins"),
	} {
		if l.MaxItems == nil || *l.MaxItems != api.MaxProperties {
			t.Errorf("maxItems %s, package api has %d", num(l.MaxItems), api.MaxProperties)
		}
	}
	if got, want := enum(t, at(t, model, "spec", "properties", "[]", "type")), api.PropertyTypes; !slices.Equal(got, strs(want)) {
		t.Errorf("type enum %v, package api has %v", got, want)
	}
	if got, want := enum(t, at(t, model, "spec", "properties", "[]", "accessMode")), api.AccessModes; !slices.Equal(got, strs(want)) {
		t.Errorf("accessMode enum %v, package api has %v", got, want)
	}

	// The schema's DNS subdomain pattern agrees with apimachinery's.
	dns := at(t, device, "spec", "nodeName")
	if ref := at(t, device, "spec", "deviceModelRef", "name"); ref.Pattern != dns.Pattern || *ref.MaxLength != *dns.MaxLength {
		t.Errorf("deviceModelRef.name and nodeName differ: %q, %q", ref.Pattern, dns.Pattern)
	}
	if *dns.MaxLength != int64(validation.DNS1123SubdomainMaxLength) {
		t.Errorf("nodeName maxLength %d, want %d", *dns.MaxLength, validation.DNS1123SubdomainMaxLength)
	}
	re := regexpOf(t, dns.Pattern)
	for _, name := range []string{"edge-1", "store-0421-pi", "a.b.c", "A", "-a", "a-", "a_b", "a..b", "1"} {
		if got, want := re.MatchString(name), len(validation.IsDNS1123Subdomain(name)) == 0; got != want {
			t.Errorf("nodeName pattern on %q = %v, apimachinery says %v", name, got, want)
		}
	}
}

// TestPrinterColumns checks what kubectl get shows and the short names.
func TestPrinterColumns(t *testing.T) {
	byKind := load(t)
	cols := func(kind string) string {
		var s []string
		for _, c := range byKind[kind].Spec.Versions[0].AdditionalPrinterColumns {
			s = append(s, strings.ToUpper(c.Name)+"="+c.JSONPath)
		}
		return strings.Join(s, " ")
	}
	if got, want := cols(api.DeviceKind), "NODE=.spec.nodeName MODEL=.spec.deviceModelRef.name STATE=.status.state AGE=.metadata.creationTimestamp"; got != want {
		t.Errorf("Device columns %q, want %q", got, want)
	}
	if got, want := cols(api.DeviceModelKind), "PROTOCOL=.spec.protocol AGE=.metadata.creationTimestamp"; got != want {
		t.Errorf("DeviceModel columns %q, want %q", got, want)
	}
	if sr := byKind[api.DeviceKind].Spec.Versions[0].Subresources; sr == nil || sr.Status == nil {
		t.Error("Device has no status subresource")
	}
	if sr := byKind[api.DeviceModelKind].Spec.Versions[0].Subresources; sr != nil && sr.Status != nil {
		t.Error("DeviceModel has a status subresource but no status")
	}
	// Short names must not collide between the two.
	seen := map[string]string{}
	for kind, c := range byKind {
		for _, n := range c.Spec.Names.ShortNames {
			if other, ok := seen[n]; ok {
				t.Errorf("short name %s of %s is also %s's", n, kind, other)
			}
			seen[n] = kind
		}
		if !slices.Contains(c.Spec.Names.Categories, "tether") {
			t.Errorf("%s is not in category tether", kind)
		}
	}
}

func enum(t *testing.T, s *apiextensionsv1.JSONSchemaProps) []string {
	t.Helper()
	var out []string
	for _, e := range s.Enum {
		out = append(out, strings.Trim(string(e.Raw), `"`))
	}
	return out
}

func strs[T ~string](in []T) []string {
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = string(v)
	}
	return out
}

func regexpOf(t *testing.T, pattern string) *regexp.Regexp {
	t.Helper()
	re, err := regexp.Compile(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

func num(p *int64) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatInt(*p, 10)
}
