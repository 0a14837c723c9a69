package mqtt

import (
	"errors"
	"fmt"
	"strings"
)

// Kind says which of the KubeEdge topics a Topic is. Receivers switch on it;
// nothing downstream looks at the topic string.
type Kind uint8

// The topic kinds. The comment of each gives its topic; <ns>/<name> is a
// device, <node> an edge node, <client> an MQTT client id.
const (
	KindInvalid Kind = iota

	KindTwinUpdate         // $hw/events/device/<ns>/<name>/twin/update (device → edge)
	KindTwinUpdateResult   // $hw/events/device/<ns>/<name>/twin/update/result (edge → device)
	KindTwinUpdateDelta    // $hw/events/device/<ns>/<name>/twin/update/delta (edge → device)
	KindTwinUpdateDocument // $hw/events/device/<ns>/<name>/twin/update/document (edge → device)
	KindTwinGet            // $hw/events/device/<ns>/<name>/twin/get (device → edge)
	KindTwinGetResult      // $hw/events/device/<ns>/<name>/twin/get/result (edge → device)
	KindStateUpdate        // $hw/events/device/<ns>/<name>/state/update (device → edge)
	KindStateUpdateResult  // $hw/events/device/<ns>/<name>/state/update/result (edge → device)
	KindDeviceUpdated      // $hw/events/device/<ns>/<name>/updated (edge → device)

	KindMembershipGet       // $hw/events/node/<node>/membership/get (device → edge)
	KindMembershipGetResult // $hw/events/node/<node>/membership/get/result (edge → device)
	KindMembershipUpdated   // $hw/events/node/<node>/membership/updated (edge → device)

	KindConnected    // $hw/events/connected/<client> (broker)
	KindDisconnected // $hw/events/disconnected/<client> (broker)
	KindUpload       // $hw/events/upload/<path> (device → edge, forwarded as is)

	KindDataUpdate // $ke/events/device/<ns>/<name>/data/update (data plane, not the twin)

	numKinds
)

// Topic prefixes and the device-topic suffixes, as KubeEdge spells them.
const (
	DevicePrefix       = "$hw/events/device/"
	NodePrefix         = "$hw/events/node/"
	ConnectedPrefix    = "$hw/events/connected/"
	DisconnectedPrefix = "$hw/events/disconnected/"
	UploadPrefix       = "$hw/events/upload/"
	DataPrefix         = "$ke/events/device/"
)

// Subscription filters of the edge (KubeEdge's edge subscribes to the same).
const (
	FilterTwin          = "$hw/events/device/+/+/twin/+"
	FilterStateUpdate   = "$hw/events/device/+/+/state/update"
	FilterMembershipGet = "$hw/events/node/+/membership/get"
	FilterUpload        = "$hw/events/upload/#"
)

// EdgeSubscriptions returns the filters the edge subscribes to, in a fixed
// order. Each device → edge topic of the twin matches exactly one of them.
func EdgeSubscriptions() []string {
	return []string{FilterTwin, FilterStateUpdate, FilterMembershipGet, FilterUpload}
}

// suffix is the part of a topic after the device or node segments.
var suffix = [numKinds]string{
	KindTwinUpdate:          "twin/update",
	KindTwinUpdateResult:    "twin/update/result",
	KindTwinUpdateDelta:     "twin/update/delta",
	KindTwinUpdateDocument:  "twin/update/document",
	KindTwinGet:             "twin/get",
	KindTwinGetResult:       "twin/get/result",
	KindStateUpdate:         "state/update",
	KindStateUpdateResult:   "state/update/result",
	KindDeviceUpdated:       "updated",
	KindMembershipGet:       "membership/get",
	KindMembershipGetResult: "membership/get/result",
	KindMembershipUpdated:   "membership/updated",
	KindDataUpdate:          "data/update",
}

// kindName names the kinds that have no suffix of their own.
var kindName = map[Kind]string{
	KindInvalid:      "invalid",
	KindConnected:    "connected",
	KindDisconnected: "disconnected",
	KindUpload:       "upload",
}

func (k Kind) String() string {
	if n, ok := kindName[k]; ok {
		return n
	}
	if k < numKinds && suffix[k] != "" {
		return suffix[k]
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// IsDevice reports whether topics of this kind name a device.
func (k Kind) IsDevice() bool {
	return k >= KindTwinUpdate && k <= KindDeviceUpdated || k == KindDataUpdate
}

// IsNode reports whether topics of this kind name a node.
func (k Kind) IsNode() bool { return k >= KindMembershipGet && k <= KindMembershipUpdated }

// Result is the kind on which the edge answers a request of kind k, or
// KindInvalid when k is not a request.
func (k Kind) Result() Kind {
	switch k {
	case KindTwinUpdate:
		return KindTwinUpdateResult
	case KindTwinGet:
		return KindTwinGetResult
	case KindStateUpdate:
		return KindStateUpdateResult
	case KindMembershipGet:
		return KindMembershipGetResult
	}
	return KindInvalid
}

// DeviceID names a device: its namespace and name, two topic segments.
type DeviceID struct {
	Namespace string
	Name      string
}

// String is "<ns>/<name>", the device id of membership payloads.
func (d DeviceID) String() string { return d.Namespace + "/" + d.Name }

// Validate checks that both parts are usable as one topic segment each.
func (d DeviceID) Validate() error {
	if err := validSegment(d.Namespace); err != nil {
		return fmt.Errorf("device namespace %q: %w", d.Namespace, err)
	}
	if err := validSegment(d.Name); err != nil {
		return fmt.Errorf("device name %q: %w", d.Name, err)
	}
	return nil
}

// Topic is a parsed topic. Which fields are set depends on Kind: Device for
// device kinds, Node for node kinds, Client for connected/disconnected, Path
// (what follows $hw/events/upload/) for KindUpload.
type Topic struct {
	Kind   Kind
	Device DeviceID
	Node   string
	Client string
	Path   string
}

// DeviceTopic is the topic of kind k for device d.
func DeviceTopic(k Kind, d DeviceID) Topic { return Topic{Kind: k, Device: d} }

// NodeTopic is the topic of kind k for node n.
func NodeTopic(k Kind, node string) Topic { return Topic{Kind: k, Node: node} }

// String builds the topic string. It does not validate; ParseTopic does.
func (t Topic) String() string {
	switch {
	case t.Kind == KindDataUpdate:
		return DataPrefix + t.Device.Namespace + "/" + t.Device.Name + "/" + suffix[t.Kind]
	case t.Kind.IsDevice():
		return DevicePrefix + t.Device.Namespace + "/" + t.Device.Name + "/" + suffix[t.Kind]
	case t.Kind.IsNode():
		return NodePrefix + t.Node + "/" + suffix[t.Kind]
	case t.Kind == KindConnected:
		return ConnectedPrefix + t.Client
	case t.Kind == KindDisconnected:
		return DisconnectedPrefix + t.Client
	case t.Kind == KindUpload:
		return UploadPrefix + t.Path
	}
	return ""
}

// ErrUnknownTopic is returned (wrapped) by ParseTopic for a topic that is none
// of the known ones.
var ErrUnknownTopic = errors.New("unknown topic")

// ParseTopic parses one of the topics of this package. Device, node and
// client segments must be non-empty and free of MQTT wildcards.
func ParseTopic(s string) (Topic, error) {
	bad := func(why string) (Topic, error) {
		return Topic{}, fmt.Errorf("topic %q: %w: %s", s, ErrUnknownTopic, why)
	}
	switch {
	case strings.HasPrefix(s, DevicePrefix), strings.HasPrefix(s, DataPrefix):
		rest, isData := strings.CutPrefix(s, DataPrefix)
		if !isData {
			rest = s[len(DevicePrefix):]
		}
		ns, rest, ok1 := strings.Cut(rest, "/")
		name, sfx, ok2 := strings.Cut(rest, "/")
		if !ok1 || !ok2 {
			return bad("want <ns>/<name>/<event>")
		}
		d := DeviceID{Namespace: ns, Name: name}
		if err := d.Validate(); err != nil {
			return bad(err.Error())
		}
		if isData {
			if sfx != suffix[KindDataUpdate] {
				return bad("unknown data event")
			}
			return Topic{Kind: KindDataUpdate, Device: d}, nil
		}
		for k := KindTwinUpdate; k <= KindDeviceUpdated; k++ {
			if sfx == suffix[k] {
				return Topic{Kind: k, Device: d}, nil
			}
		}
		return bad("unknown device event")
	case strings.HasPrefix(s, NodePrefix):
		node, sfx, ok := strings.Cut(s[len(NodePrefix):], "/")
		if !ok {
			return bad("want <node>/<event>")
		}
		if err := validSegment(node); err != nil {
			return bad("node: " + err.Error())
		}
		for k := KindMembershipGet; k <= KindMembershipUpdated; k++ {
			if sfx == suffix[k] {
				return Topic{Kind: k, Node: node}, nil
			}
		}
		return bad("unknown node event")
	case strings.HasPrefix(s, ConnectedPrefix), strings.HasPrefix(s, DisconnectedPrefix):
		k, client := KindConnected, strings.TrimPrefix(s, ConnectedPrefix)
		if strings.HasPrefix(s, DisconnectedPrefix) {
			k, client = KindDisconnected, s[len(DisconnectedPrefix):]
		}
		if client == "" || strings.ContainsAny(client, "+#\x00") {
			return bad("empty client id or one with a wildcard")
		}
		return Topic{Kind: k, Client: client}, nil
	case strings.HasPrefix(s, UploadPrefix):
		p := s[len(UploadPrefix):]
		if p == "" || strings.ContainsAny(p, "+#\x00") {
			return bad("empty upload path or one with a wildcard")
		}
		return Topic{Kind: KindUpload, Path: p}, nil
	}
	return bad("unknown prefix")
}

func validSegment(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if strings.ContainsAny(s, "/+#\x00") {
		return errors.New("contains one of / + # NUL")
	}
	return nil
}

// Match reports whether topic matches the MQTT subscription filter (+ is
// one level, a trailing # any number of levels including none).
func Match(filter, topic string) bool {
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" && !fmore {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a".
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}
