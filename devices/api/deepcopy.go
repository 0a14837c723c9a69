package api

import (
	"k8s.io/apimachinery/pkg/runtime"
)

// Hand-written deep copies, in the shape deepcopy-gen produces. A new field
// holding a pointer, slice or map needs a line here; TestDeepCopy fills
// every field and checks that the copy shares no memory.

// DeepCopyInto copies m into out.
func (m *DeviceModel) DeepCopyInto(out *DeviceModel) {
	*out = *m
	out.TypeMeta = m.TypeMeta
	m.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	m.Spec.DeepCopyInto(&out.Spec)
}

// DeepCopy returns a deep copy of m.
func (m *DeviceModel) DeepCopy() *DeviceModel {
	if m == nil {
		return nil
	}
	out := new(DeviceModel)
	m.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (m *DeviceModel) DeepCopyObject() runtime.Object {
	if c := m.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies s into out.
func (s *DeviceModelSpec) DeepCopyInto(out *DeviceModelSpec) {
	*out = *s
	if s.Properties != nil {
		out.Properties = make([]ModelProperty, len(s.Properties))
		copy(out.Properties, s.Properties) // ModelProperty holds only strings
	}
}

// DeepCopyInto copies l into out.
func (l *DeviceModelList) DeepCopyInto(out *DeviceModelList) {
	*out = *l
	out.TypeMeta = l.TypeMeta
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]DeviceModel, len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns a deep copy of l.
func (l *DeviceModelList) DeepCopy() *DeviceModelList {
	if l == nil {
		return nil
	}
	out := new(DeviceModelList)
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *DeviceModelList) DeepCopyObject() runtime.Object {
	if c := l.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies d into out.
func (d *Device) DeepCopyInto(out *Device) {
	*out = *d
	out.TypeMeta = d.TypeMeta
	d.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	d.Spec.DeepCopyInto(&out.Spec)
	d.Status.DeepCopyInto(&out.Status)
}

// DeepCopy returns a deep copy of d.
func (d *Device) DeepCopy() *Device {
	if d == nil {
		return nil
	}
	out := new(Device)
	d.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (d *Device) DeepCopyObject() runtime.Object {
	if c := d.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopyInto copies s into out.
func (s *DeviceSpec) DeepCopyInto(out *DeviceSpec) {
	*out = *s
	if s.DeviceModelRef != nil {
		ref := *s.DeviceModelRef
		out.DeviceModelRef = &ref
	}
	if s.Properties != nil {
		out.Properties = make([]DeviceProperty, len(s.Properties))
		for i := range s.Properties {
			s.Properties[i].DeepCopyInto(&out.Properties[i])
		}
	}
	out.Protocol.ConfigData = s.Protocol.ConfigData.DeepCopy()
}

// DeepCopyInto copies p into out.
func (p *DeviceProperty) DeepCopyInto(out *DeviceProperty) {
	*out = *p
	p.Desired.DeepCopyInto(&out.Desired)
	out.Visitors.ConfigData = p.Visitors.ConfigData.DeepCopy()
}

// DeepCopyInto copies t into out.
func (t *TwinProperty) DeepCopyInto(out *TwinProperty) {
	*out = *t
	if t.Metadata != nil {
		out.Metadata = make(map[string]string, len(t.Metadata))
		for k, v := range t.Metadata {
			out.Metadata[k] = v
		}
	}
}

// DeepCopyInto copies s into out.
func (s *DeviceStatus) DeepCopyInto(out *DeviceStatus) {
	*out = *s
	if s.Twins != nil {
		out.Twins = make([]Twin, len(s.Twins))
		for i := range s.Twins {
			out.Twins[i] = s.Twins[i]
			s.Twins[i].Reported.DeepCopyInto(&out.Twins[i].Reported)
			s.Twins[i].ObservedDesired.DeepCopyInto(&out.Twins[i].ObservedDesired)
		}
	}
}

// DeepCopyInto copies l into out.
func (l *DeviceList) DeepCopyInto(out *DeviceList) {
	*out = *l
	out.TypeMeta = l.TypeMeta
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]Device, len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
}

// DeepCopy returns a deep copy of l.
func (l *DeviceList) DeepCopy() *DeviceList {
	if l == nil {
		return nil
	}
	out := new(DeviceList)
	l.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *DeviceList) DeepCopyObject() runtime.Object {
	if c := l.DeepCopy(); c != nil {
		return c
	}
	return nil
}

// DeepCopy returns a deep copy of c. Maps and slices are copied
// recursively; other values (the scalars JSON decodes to) are copied by
// assignment.
func (c ConfigData) DeepCopy() ConfigData {
	if c == nil {
		return nil
	}
	return copyJSONValue(map[string]any(c)).(map[string]any)
}

func copyJSONValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v == nil {
			return v
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = copyJSONValue(e)
		}
		return out
	case ConfigData:
		return ConfigData(copyJSONValue(map[string]any(v)).(map[string]any))
	case []any:
		if v == nil {
			return v
		}
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = copyJSONValue(e)
		}
		return out
	case map[string]string:
		out := make(map[string]string, len(v))
		for k, e := range v {
			out[k] = e
		}
		return out
	case []string:
		return append([]string(nil), v...)
	default:
		return v
	}
}
