package api

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// fill sets every field of v reachable by reflection (two elements per
// slice and map, every pointer allocated), so a field missing from the
// hand-written DeepCopyInto shows up as shared memory. ObjectMeta and
// ListMeta are apimachinery's and left alone.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[metav1.ObjectMeta]() || v.Type() == reflect.TypeFor[metav1.ListMeta]() {
			return
		}
		for i := range v.NumField() {
			fill(v.Field(i))
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		if v.Type() == reflect.TypeFor[ConfigData]() {
			v.Set(reflect.ValueOf(ConfigData{
				"ip": "10.0.0.1", "port": int64(502), "scale": 0.1, "on": true, "none": nil,
				"tcp":   map[string]any{"keepAlive": true, "ports": []any{int64(1), map[string]any{"x": "y"}}},
				"names": []any{"a", "b"},
			}))
			return
		}
		for _, k := range []string{"a", "b"} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e)
			v.SetMapIndex(reflect.ValueOf(k), e)
		}
	case reflect.String:
		v.SetString("s")
	case reflect.Int64:
		v.SetInt(7)
	case reflect.Bool:
		v.SetBool(true)
	}
}

// addrs collects the address of every map, slice backing array and pointer
// reachable from v.
func addrs(v reflect.Value, out map[uintptr]string, path string) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return
		}
		out[v.Pointer()] = path
		addrs(v.Elem(), out, path)
	case reflect.Interface:
		if !v.IsNil() {
			addrs(v.Elem(), out, path)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			addrs(v.Field(i), out, path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice:
		if v.Len() == 0 {
			return
		}
		out[v.Pointer()] = path
		for i := range v.Len() {
			addrs(v.Index(i), out, path+"[]")
		}
	case reflect.Map:
		if v.Len() == 0 {
			return
		}
		out[v.Pointer()] = path
		for _, k := range v.MapKeys() {
			addrs(v.MapIndex(k), out, path+"{"+k.String()+"}")
		}
	}
}

func TestDeepCopy(t *testing.T) {
	for _, obj := range []runtime.Object{&DeviceModel{}, &DeviceModelList{}, &Device{}, &DeviceList{}} {
		fill(reflect.ValueOf(obj).Elem())
		cp := obj.DeepCopyObject()
		if !reflect.DeepEqual(obj, cp) {
			t.Errorf("%T: copy differs:\n%+v\n%+v", obj, obj, cp)
		}
		orig, copied := map[uintptr]string{}, map[uintptr]string{}
		addrs(reflect.ValueOf(obj), orig, "")
		addrs(reflect.ValueOf(cp), copied, "")
		if len(orig) < 2 {
			t.Fatalf("%T: fill reached only %d references", obj, len(orig))
		}
		for a, path := range copied {
			if _, ok := orig[a]; ok {
				t.Errorf("%T%s: the copy shares memory with the original", obj, path)
			}
		}
	}
	var nilDevice *Device
	if nilDevice.DeepCopy() != nil || ConfigData(nil).DeepCopy() != nil {
		t.Error("copy of nil is not nil")
	}
}
