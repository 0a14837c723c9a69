package broker

import (
	"testing"

	"github.com/tether-edge/tether/devices/mqtt"
)

// TestRulesFollowTopicKinds checks the topic rules against the kinds of
// devices/mqtt: RoleDevice publishes exactly the device → edge topics and
// subscribes to exactly the edge → device ones; RoleEdge does both.
func TestRulesFollowTopicKinds(t *testing.T) {
	dev := mqtt.DeviceID{Namespace: "ns", Name: "d"}
	toEdge := map[mqtt.Kind]bool{mqtt.KindTwinUpdate: true, mqtt.KindTwinGet: true, mqtt.KindStateUpdate: true,
		mqtt.KindMembershipGet: true, mqtt.KindUpload: true, mqtt.KindDataUpdate: true}
	toDevice := map[mqtt.Kind]bool{mqtt.KindTwinUpdateResult: true, mqtt.KindTwinUpdateDelta: true,
		mqtt.KindTwinUpdateDocument: true, mqtt.KindTwinGetResult: true, mqtt.KindStateUpdateResult: true,
		mqtt.KindDeviceUpdated: true, mqtt.KindMembershipGetResult: true, mqtt.KindMembershipUpdated: true}
	for k := mqtt.KindTwinUpdate; k <= mqtt.KindDataUpdate; k++ {
		topic := mqtt.Topic{Kind: k, Device: dev, Node: "n1", Client: "c", Path: "a/b"}.String()
		if topic == "" {
			continue
		}
		if got := allowed(RoleDevice, "n1", topic, true); got != toEdge[k] {
			t.Errorf("device publish %s: %v", topic, got)
		}
		if got := allowed(RoleDevice, "n1", topic, false); got != toDevice[k] {
			t.Errorf("device subscribe %s: %v", topic, got)
		}
		if !allowed(RoleEdge, "n1", topic, true) || !allowed(RoleEdge, "n1", topic, false) {
			t.Errorf("edge refused %s", topic)
		}
		if allowed(0, "", topic, true) || allowed(0, "", topic, false) {
			t.Errorf("no role allowed %s", topic)
		}
		if k.IsNode() {
			other := mqtt.NodeTopic(k, "n2").String()
			if allowed(RoleDevice, "n1", other, true) || allowed(RoleDevice, "n1", other, false) {
				t.Errorf("device allowed another node's %s", other)
			}
		}
	}
	for _, f := range mqtt.EdgeSubscriptions() {
		if !allowed(RoleEdge, "n1", f, false) {
			t.Errorf("edge may not subscribe %s", f)
		}
	}
	for _, f := range []string{"#", "+/#", "$SYS/#", "$hw/#", "$hw/events/device/+/+/#", "$hw/events/device/#"} {
		if allowed(RoleEdge, "n1", f, false) && f[0] != '$' || allowed(RoleDevice, "n1", f, false) {
			t.Errorf("%s allowed", f)
		}
	}
}

// TestLimitConnFraming checks the framing the packet bound follows,
// however the reads split the bytes.
func TestLimitConnFraming(t *testing.T) {
	// CONNECT-like (remaining 10), PINGREQ (0), PUBLISH of 200 (2-byte
	// length), then one of 300 over a limit of 256.
	stream := []byte{0x10, 10}
	stream = append(stream, make([]byte, 10)...)
	stream = append(stream, 0xc0, 0)
	stream = append(stream, 0x30, 0xc8, 0x01)
	stream = append(stream, make([]byte, 200)...)
	ok := len(stream)
	stream = append(stream, 0x30, 0xac, 0x02)
	for _, step := range []int{1, 2, 3, 7, 1000} {
		c := &limitConn{}
		c.limit.Store(256)
		var err error
		at := 0
		for at < len(stream) && err == nil {
			n := min(step, len(stream)-at)
			err = c.scan(stream[at : at+n])
			at += n
		}
		if err == nil || at < ok {
			t.Errorf("step %d: err %v at %d (the bad packet starts at %d)", step, err, at, ok)
		}
	}
	c := &limitConn{}
	c.limit.Store(1 << 30)
	if err := c.scan([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}); err == nil {
		t.Error("a 5-byte remaining length accepted")
	}
}
