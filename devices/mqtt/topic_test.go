package mqtt

import (
	"errors"
	"testing"
)

func TestTopicRoundTrip(t *testing.T) {
	dev := DeviceID{Namespace: "default", Name: "thermo-1"}
	tests := []struct {
		topic Topic
		want  string
	}{
		{DeviceTopic(KindTwinUpdate, dev), "$hw/events/device/default/thermo-1/twin/update"},
		{DeviceTopic(KindTwinUpdateResult, dev), "$hw/events/device/default/thermo-1/twin/update/result"},
		{DeviceTopic(KindTwinUpdateDelta, dev), "$hw/events/device/default/thermo-1/twin/update/delta"},
		{DeviceTopic(KindTwinUpdateDocument, dev), "$hw/events/device/default/thermo-1/twin/update/document"},
		{DeviceTopic(KindTwinGet, dev), "$hw/events/device/default/thermo-1/twin/get"},
		{DeviceTopic(KindTwinGetResult, dev), "$hw/events/device/default/thermo-1/twin/get/result"},
		{DeviceTopic(KindStateUpdate, dev), "$hw/events/device/default/thermo-1/state/update"},
		{DeviceTopic(KindStateUpdateResult, dev), "$hw/events/device/default/thermo-1/state/update/result"},
		{DeviceTopic(KindDeviceUpdated, dev), "$hw/events/device/default/thermo-1/updated"},
		{NodeTopic(KindMembershipGet, "edge-1"), "$hw/events/node/edge-1/membership/get"},
		{NodeTopic(KindMembershipGetResult, "edge-1"), "$hw/events/node/edge-1/membership/get/result"},
		{NodeTopic(KindMembershipUpdated, "edge-1"), "$hw/events/node/edge-1/membership/updated"},
		{Topic{Kind: KindConnected, Client: "mapper-7"}, "$hw/events/connected/mapper-7"},
		{Topic{Kind: KindDisconnected, Client: "mapper-7"}, "$hw/events/disconnected/mapper-7"},
		{Topic{Kind: KindUpload, Path: "a/b/c"}, "$hw/events/upload/a/b/c"},
		{DeviceTopic(KindDataUpdate, dev), "$ke/events/device/default/thermo-1/data/update"},
	}
	seen := map[Kind]bool{}
	for _, tt := range tests {
		seen[tt.topic.Kind] = true
		if got := tt.topic.String(); got != tt.want {
			t.Errorf("%v.String() = %q, want %q", tt.topic.Kind, got, tt.want)
		}
		got, err := ParseTopic(tt.want)
		if err != nil {
			t.Errorf("ParseTopic(%q): %v", tt.want, err)
			continue
		}
		if got != tt.topic {
			t.Errorf("ParseTopic(%q) = %+v, want %+v", tt.want, got, tt.topic)
		}
	}
	for k := KindInvalid + 1; k < numKinds; k++ {
		if !seen[k] {
			t.Errorf("kind %v not tested", k)
		}
	}
}

func TestParseTopicRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"$hw/events/device/default/twin/update", // one device segment
		"$hw/events/device/default/thermo/twin/updat",        // unknown event
		"$hw/events/device/default/thermo/twin/update/extra", // too long
		"$hw/events/device//thermo/twin/update",              // empty namespace
		"$hw/events/device/+/thermo/twin/update",             // wildcard
		"$hw/events/device/default/#/twin/update",            // wildcard
		"$hw/events/node/edge-1/membership",                  // unknown node event
		"$hw/events/node//membership/get",                    // empty node
		"$hw/events/connected/",                              // empty client
		"$hw/events/upload/",                                 // empty path
		"$ke/events/device/default/thermo/twin/update",       // twin is under $hw
		"other/topic",
	} {
		if got, err := ParseTopic(s); !errors.Is(err, ErrUnknownTopic) {
			t.Errorf("ParseTopic(%q) = %+v, %v; want ErrUnknownTopic", s, got, err)
		}
	}
}

func TestKindResult(t *testing.T) {
	for k, want := range map[Kind]Kind{
		KindTwinUpdate:        KindTwinUpdateResult,
		KindTwinGet:           KindTwinGetResult,
		KindStateUpdate:       KindStateUpdateResult,
		KindMembershipGet:     KindMembershipGetResult,
		KindTwinUpdateDelta:   KindInvalid,
		KindMembershipUpdated: KindInvalid,
	} {
		if got := k.Result(); got != want {
			t.Errorf("%v.Result() = %v, want %v", k, got, want)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"a", "a/b", false},
		{"+/+", "a/b", true},
	}
	for _, tt := range tests {
		if got := Match(tt.filter, tt.topic); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.topic, got, tt.want)
		}
	}
}

// TestEdgeSubscriptions checks that the edge's filters receive every
// device → edge topic and none of the edge's own publications.
func TestEdgeSubscriptions(t *testing.T) {
	dev := DeviceID{Namespace: "ns", Name: "d"}
	toEdge := []Topic{
		DeviceTopic(KindTwinUpdate, dev),
		DeviceTopic(KindTwinGet, dev),
		DeviceTopic(KindStateUpdate, dev),
		NodeTopic(KindMembershipGet, "n"),
		{Kind: KindUpload, Path: "x/y"},
	}
	fromEdge := []Topic{
		DeviceTopic(KindTwinUpdateResult, dev),
		DeviceTopic(KindTwinUpdateDelta, dev),
		DeviceTopic(KindTwinUpdateDocument, dev),
		DeviceTopic(KindTwinGetResult, dev),
		DeviceTopic(KindStateUpdateResult, dev),
		DeviceTopic(KindDeviceUpdated, dev),
		NodeTopic(KindMembershipGetResult, "n"),
		NodeTopic(KindMembershipUpdated, "n"),
	}
	matches := func(topic string) int {
		n := 0
		for _, f := range EdgeSubscriptions() {
			if Match(f, topic) {
				n++
			}
		}
		return n
	}
	for _, tp := range toEdge {
		if n := matches(tp.String()); n != 1 {
			t.Errorf("%s matches %d edge filters, want 1", tp, n)
		}
	}
	for _, tp := range fromEdge {
		if n := matches(tp.String()); n != 0 {
			t.Errorf("%s matches %d edge filters, want 0", tp, n)
		}
	}
}
