package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PropertyType is the type of a device property's value. Values travel as
// strings (in Device specs, twins and MQTT payloads); the type says how to
// parse them (ValidateValue).
type PropertyType string

// The property types, as KubeEdge spells them.
const (
	TypeInt     PropertyType = "INT"
	TypeFloat   PropertyType = "FLOAT"
	TypeDouble  PropertyType = "DOUBLE"
	TypeString  PropertyType = "STRING"
	TypeBoolean PropertyType = "BOOLEAN"
	TypeBytes   PropertyType = "BYTES"
)

// PropertyTypes lists every PropertyType, in the order of the CRD's enum.
var PropertyTypes = []PropertyType{TypeInt, TypeFloat, TypeDouble, TypeString, TypeBoolean, TypeBytes}

// AccessMode says whether the cloud may set a property (ReadWrite) or only
// read what the device reports (ReadOnly).
type AccessMode string

// The access modes.
const (
	ReadWrite AccessMode = "ReadWrite"
	ReadOnly  AccessMode = "ReadOnly"
)

// AccessModes lists every AccessMode, in the order of the CRD's enum.
var AccessModes = []AccessMode{ReadWrite, ReadOnly}

// DeviceModel describes a kind of device: the protocol it speaks and the
// properties every device of the model has. Namespaced; a Device refers to a
// model of its own namespace.
type DeviceModel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DeviceModelSpec `json:"spec,omitempty"`
}

// DeviceModelSpec is the model's description.
type DeviceModelSpec struct {
	// Properties are the model's properties; names are unique.
	Properties []ModelProperty `json:"properties,omitempty"`
	// Protocol names the protocol the model's devices speak (for example
	// "modbus"); the mapper that serves it registers under this name.
	Protocol string `json:"protocol,omitempty"`
}

// ModelProperty is one property of a model.
type ModelProperty struct {
	// Name is the property's name, unique in the model. Devices and twins
	// refer to the property by it (ValidatePropertyName).
	Name string `json:"name,omitempty"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Type is the type of the property's values.
	Type PropertyType `json:"type,omitempty"`
	// AccessMode says whether a Device may set a desired value.
	AccessMode AccessMode `json:"accessMode,omitempty"`
	// Minimum and Maximum, when set, bound the values of numeric
	// properties (INT, FLOAT, DOUBLE), inclusive. They are decimal
	// numbers written as strings, as in KubeEdge.
	Minimum string `json:"minimum,omitempty"`
	Maximum string `json:"maximum,omitempty"`
	// Unit is the unit of the values, for people (for example "°C").
	Unit string `json:"unit,omitempty"`
}

// DeviceModelList is a list of DeviceModels.
type DeviceModelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []DeviceModel `json:"items"`
}

// Device is one device attached to an edge node.
type Device struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DeviceSpec   `json:"spec,omitempty"`
	Status DeviceStatus `json:"status,omitempty"`
}

// DeviceSpec is what the cloud wants of the device.
type DeviceSpec struct {
	// DeviceModelRef names the device's DeviceModel, in the device's
	// namespace. Required.
	DeviceModelRef *DeviceModelRef `json:"deviceModelRef,omitempty"`
	// NodeName is the edge node the device is attached to; the node's
	// edgecore and mappers serve the device. Empty means no node yet.
	NodeName string `json:"nodeName,omitempty"`
	// Properties configure the model's properties for this device: the
	// desired value, how to read it, how often to report it. Names are
	// unique and name properties of the model.
	Properties []DeviceProperty `json:"properties,omitempty"`
	// Protocol says how to reach the device.
	Protocol ProtocolConfig `json:"protocol,omitempty"`
}

// DeviceModelRef names a DeviceModel in the namespace of the Device (the
// shape of a core/v1 LocalObjectReference, as in KubeEdge).
type DeviceModelRef struct {
	Name string `json:"name,omitempty"`
}

// ProtocolConfig says how to reach a device, or one property of it.
type ProtocolConfig struct {
	// ProtocolName names the protocol (and so the mapper), for example
	// "modbus".
	ProtocolName string `json:"protocolName,omitempty"`
	// ConfigData is the protocol's own configuration (addresses, slave
	// IDs, registers...), free-form JSON that only the mapper reads.
	ConfigData ConfigData `json:"configData,omitempty"`
}

// VisitorConfig says how a mapper reads one property: the same shape as
// ProtocolConfig.
type VisitorConfig struct {
	ProtocolName string     `json:"protocolName,omitempty"`
	ConfigData   ConfigData `json:"configData,omitempty"`
}

// ConfigData is free-form protocol configuration: a JSON object whose
// values are what JSON decodes into an any (string, bool, nil, []any,
// map[string]any, and numbers: float64 through encoding/json, int64 for
// whole numbers through apimachinery's serializer). Its CRD schema preserves
// unknown fields.
type ConfigData map[string]any

// DeviceProperty configures one property of the model for this device.
type DeviceProperty struct {
	// Name names a property of the device's model.
	Name string `json:"name,omitempty"`
	// Desired is the value the cloud wants the device to have; only for
	// ReadWrite properties. The twin's "expected" value at the edge.
	Desired TwinProperty `json:"desired,omitempty"`
	// Visitors say how the mapper reads and writes the property.
	Visitors VisitorConfig `json:"visitors,omitempty"`
	// ReportToCloud says whether reported values go up to the cloud (into
	// the Device's status); otherwise they stay at the edge.
	ReportToCloud bool `json:"reportToCloud,omitempty"`
	// CollectCycle is how often, in milliseconds, the mapper reads the
	// property from the device. Zero means the mapper's default.
	CollectCycle int64 `json:"collectCycle,omitempty"`
	// ReportCycle is how often, in milliseconds, the mapper reports the
	// value it read. Zero means the mapper's default.
	ReportCycle int64 `json:"reportCycle,omitempty"`
}

// TwinProperty is a property's value with metadata (for example
// "timestamp" in milliseconds since the epoch, or "type").
type TwinProperty struct {
	// Value is the value, as a string, parsed by the property's type.
	Value string `json:"value"`
	// Metadata is free-form: KubeEdge writes "timestamp" and "type".
	Metadata map[string]string `json:"metadata,omitempty"`
}

// DeviceStatus is what the edge last reported of the device.
type DeviceStatus struct {
	// Twins hold, per property, the value the device reported and the
	// desired value it had seen when it did. PropertyNames are unique.
	Twins []Twin `json:"twins,omitempty"`
	// State is the device's state as its mapper reports it: "ok",
	// "online", "offline", "unhealthy" or "unknown".
	State string `json:"state,omitempty"`
	// LastOnlineTime is when the device was last seen online (RFC 3339),
	// a string as in KubeEdge.
	LastOnlineTime string `json:"lastOnlineTime,omitempty"`
	// ReportOrder is the order of the edge's report that last wrote this
	// status, "<store epoch>:<seq>" (protocol.StatusOrder), written by
	// cloudcore with the status: a report not newer is not written, so
	// that a late write of a cloudcore replica the edge has left cannot
	// take the status back (cloudcore/status/fence.go). It is in the
	// status, not an annotation, because the API server keeps a custom
	// resource's metadata on a status write.
	ReportOrder string `json:"reportOrder,omitempty"`
}

// The device states a mapper reports (peers.md section 1).
const (
	StateOK        = "ok"
	StateOnline    = "online"
	StateOffline   = "offline"
	StateUnhealthy = "unhealthy"
	StateUnknown   = "unknown"
)

// Twin is the reported side of one property.
type Twin struct {
	// PropertyName names the property.
	PropertyName string `json:"propertyName,omitempty"`
	// Reported is the value the device reported (the twin's "actual").
	Reported TwinProperty `json:"reported,omitempty"`
	// ObservedDesired is the desired value the edge had applied when the
	// device reported.
	ObservedDesired TwinProperty `json:"observedDesired,omitempty"`
}

// DeviceList is a list of Devices.
type DeviceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []Device `json:"items"`
}
