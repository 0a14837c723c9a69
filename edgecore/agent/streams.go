package agent

import (
	"net"

	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/protocol"
	"github.com/tether-edge/tether/streams"
)

// streams makes the session's stream multiplexer. With a hub older than
// protocol version 3 none arrive; without Config.Streams each is refused.
func (a *Agent) streams(conn *link.Conn, w protocol.Welcome) *streams.Mux {
	accept := a.cfg.Streams
	if accept == nil {
		accept = func(net.Conn) bool { return false }
	}
	if w.ProtocolVersion < 3 {
		accept = nil
	}
	return streams.NewMux(conn.Write, a.cfg.MaxStreams, accept)
}
