package broker

import (
	"bytes"
	"crypto/subtle"
	"log/slog"
	"strings"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"
)

// The topic grammar of devices/mqtt, which this package does not import
// (it imports nothing of ours; acl_test.go checks the two agree).
const (
	devicePrefix = "$hw/events/device/" // <ns>/<name>/<suffix>
	nodePrefix   = "$hw/events/node/"   // <node>/<suffix>
	uploadPrefix = "$hw/events/upload/" // <path>
	dataPrefix   = "$ke/events/device/" // <ns>/<name>/data/update
	dataSuffix   = "data/update"
)

// What RoleDevice may publish (device → edge) and subscribe to (edge →
// device), by the suffix after the device or node segments.
var (
	devicePublish   = set("twin/update", "twin/get", "state/update")
	deviceSubscribe = set("twin/update/result", "twin/update/delta", "twin/update/document", "twin/get/result",
		"state/update/result", "updated")
	nodePublish   = set("membership/get")
	nodeSubscribe = set("membership/get/result", "membership/updated")
)

func set(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, x := range s {
		m[x] = true
	}
	return m
}

// allowed reports whether a client of role may publish on topic (write) or
// subscribe to the filter topic (!write). node, if set, is the only node
// whose membership topics RoleDevice may use.
func allowed(role Role, node, topic string, write bool) bool {
	switch role {
	case RoleEdge:
		return strings.HasPrefix(topic, "$hw/events/") || strings.HasPrefix(topic, "$ke/events/")
	case RoleDevice:
		return deviceAllowed(node, topic, write)
	}
	return false
}

func deviceAllowed(node, topic string, write bool) bool {
	// segment accepts one topic level: a name, or in a filter "+".
	segment := func(s string) bool {
		if !write && s == "+" {
			return true
		}
		return s != "" && !strings.ContainsAny(s, "+#\x00")
	}
	switch {
	case strings.HasPrefix(topic, devicePrefix):
		parts := strings.SplitN(topic[len(devicePrefix):], "/", 3)
		if len(parts) != 3 || !segment(parts[0]) || !segment(parts[1]) {
			return false
		}
		if write {
			return devicePublish[parts[2]]
		}
		return deviceSubscribe[parts[2]]
	case strings.HasPrefix(topic, nodePrefix):
		n, sfx, ok := strings.Cut(topic[len(nodePrefix):], "/")
		// A filter may name the node or "+" (which, on this node's
		// broker, matches this node's topics); a topic must name the node.
		if !ok || !segment(n) || (node != "" && n != node && n != "+") {
			return false
		}
		if write {
			return nodePublish[sfx]
		}
		return nodeSubscribe[sfx]
	case write && strings.HasPrefix(topic, uploadPrefix):
		return len(topic) > len(uploadPrefix) && !strings.ContainsAny(topic, "+#\x00")
	case write && strings.HasPrefix(topic, dataPrefix):
		parts := strings.SplitN(topic[len(dataPrefix):], "/", 3)
		return len(parts) == 3 && segment(parts[0]) && segment(parts[1]) && parts[2] == dataSuffix
	}
	return false
}

// deviceOf returns the device a device topic (twin, state, updated, or
// data plane) or filter names; ok is false for other topics and for a
// filter whose device segments are wildcards.
func deviceOf(topic string) (ns, name string, ok bool) {
	rest, found := strings.CutPrefix(topic, devicePrefix)
	if !found {
		if rest, found = strings.CutPrefix(topic, dataPrefix); !found {
			return "", "", false
		}
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 || strings.ContainsAny(parts[0], "+#") || strings.ContainsAny(parts[1], "+#") {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// authHook checks credentials at CONNECT and topics at PUBLISH, SUBSCRIBE
// and delivery (see the package doc), and keeps the topics of a device
// from users whose Devices lack it.
type authHook struct {
	mochi.HookBase
	users     map[string]User
	anonymous bool
	node      string
	server    *mochi.Server
	// dummy is compared against when the username is unknown, so that a
	// refusal takes as long either way.
	dummy []byte
	// logDevices spaces the logs of topics refused by a user's Devices.
	logDevices *rate.Sometimes
}

func newAuthHook(cfg Config, server *mochi.Server) *authHook {
	h := &authHook{users: map[string]User{}, anonymous: cfg.AllowAnonymous, node: cfg.NodeName, server: server,
		dummy:      []byte("not a password of any user: " + strings.Repeat("x", 32)),
		logDevices: &rate.Sometimes{Interval: 10 * time.Second}}
	for _, u := range cfg.Users {
		h.users[u.Name] = u
	}
	return h
}

func (h *authHook) ID() string { return "tether-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

// devices is the set of devices cl may touch; nil: every one.
func (h *authHook) devices(cl *mochi.Client) Devices {
	if len(cl.Properties.Username) == 0 {
		return nil
	}
	return h.users[string(cl.Properties.Username)].Devices
}

// deviceAllowed reports whether the device topic names a device of cl's
// Devices (true for other topics, and for filters with "+" for the device:
// each delivery is checked with its topic). The membership topics are
// refused to a client with Devices: their answers list every device of the
// node, with its twin.
func (h *authHook) deviceAllowed(cl *mochi.Client, topic string) bool {
	d := h.devices(cl)
	if d == nil {
		return true
	}
	if strings.HasPrefix(topic, nodePrefix) {
		return false
	}
	ns, name, ok := deviceOf(topic)
	return !ok || d.Has(ns, name)
}

// role is the role of a client let in: its user's, or RoleDevice when
// anonymous; 0 (nothing allowed) for anything else.
func (h *authHook) role(cl *mochi.Client) Role {
	name := string(cl.Properties.Username)
	if name == "" {
		if h.anonymous {
			return RoleDevice
		}
		return 0
	}
	return h.users[name].Role
}

func (h *authHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	name := string(pk.Connect.Username)
	refuse := func(why string) bool {
		h.Log.Warn("mqtt client refused", slog.String("reason", why), slog.String("client", cl.ID),
			slog.String("username", string(bytes.ToValidUTF8(pk.Connect.Username, []byte("?")))),
			slog.String("remote", cl.Net.Remote))
		return false
	}
	var role Role
	var devs Devices
	if name == "" {
		if !h.anonymous || len(pk.Connect.Password) > 0 {
			return refuse("no username")
		}
		role = RoleDevice
	} else {
		u, ok := h.users[name]
		want := h.dummy
		if ok {
			want = []byte(u.Password)
		}
		if subtle.ConstantTimeCompare(pk.Connect.Password, want) != 1 || !ok {
			return refuse("bad username or password")
		}
		role, devs = u.Role, u.Devices
	}
	if pk.Connect.WillFlag && !allowed(role, h.node, pk.Connect.WillTopic, true) {
		return refuse("will topic " + pk.Connect.WillTopic + " not allowed")
	}
	if ns, name, ok := deviceOf(pk.Connect.WillTopic); pk.Connect.WillFlag && ok && devs != nil && !devs.Has(ns, name) {
		return refuse("will topic " + pk.Connect.WillTopic + " not allowed")
	}
	// MQTT gives a newcomer with a client id in use the session of the
	// client it replaces: that must be the same user's.
	if old, ok := h.server.Clients.Get(cl.ID); ok && !bytes.Equal(old.Properties.Username, pk.Connect.Username) {
		return refuse("client id in use by another user")
	}
	if role == RoleEdge {
		if c, ok := cl.Net.Conn.(*limitConn); ok {
			c.setLimit(EdgeMaxPacketBytes)
		}
	}
	return true
}

// OnACLCheck is asked at each PUBLISH (write), SUBSCRIBE (the filter) and
// delivery (the topic, !write) of a message to a client.
func (h *authHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if !allowed(h.role(cl), h.node, topic, write) {
		h.refused(cl, topic, write)
		return false
	}
	if !h.deviceAllowed(cl, topic) {
		// Deliveries to a filter with "+" land here for every other
		// device: logged at most every 10 s.
		h.logDevices.Do(func() { h.refused(cl, topic, write) })
		return false
	}
	return true
}

func (h *authHook) refused(cl *mochi.Client, topic string, write bool) {
	op := "subscribe"
	if write {
		op = "publish"
	}
	h.Log.Warn("mqtt "+op+" refused by the topic rules", slog.String("client", cl.ID),
		slog.String("username", string(bytes.ToValidUTF8(cl.Properties.Username, []byte("?")))),
		slog.String("topic", topic))
}
