package cloudcore

import (
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// A headless Service's slices give the ready replicas' peer ports, this
// replica's own address and port and slices without a "peer" port left
// out.
func TestPeerAddrs(t *testing.T) {
	name := func(s string) *string { return &s }
	port := func(p int32) *int32 { return &p }
	no := false
	items := []discoveryv1.EndpointSlice{
		{Ports: []discoveryv1.EndpointPort{{Name: name("hub"), Port: port(10000)}, {Name: name("peer"), Port: port(10002)}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"10.0.0.1"}},
				{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &no}},
				{Addresses: []string{"10.0.0.3"}},
				{Addresses: []string{"fd00::4"}},
			}},
		{Ports: []discoveryv1.EndpointPort{{Name: name("hub"), Port: port(10000)}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.5"}}}},
	}
	got := peerAddrs(items, map[string]bool{"10.0.0.3:10002": true, "10.0.0.1:10003": true})
	if want := []string{"10.0.0.1:10002", "[fd00::4]:10002"}; !slices.Equal(got, want) {
		t.Fatalf("peer addresses %v, want %v", got, want)
	}
}

func TestConfigPeers(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{PeerAddr: "0.0.0.0:10002", PeerService: "tether-cloudcore-peers"}, true},
		{Config{PeerAddr: "0.0.0.0:10002", Peers: []string{"10.0.0.1:10002"}}, true},
		{Config{PeerAddr: "10002"}, false},
		{Config{Peers: []string{"10.0.0.1"}}, false},
		{Config{Peers: []string{"10.0.0.1:1"}, PeerService: "x"}, false},
		{Config{PeerService: "Not_A_Name"}, false},
	} {
		if err := c.cfg.validate(); (err == nil) != c.ok {
			t.Errorf("%+v: %v, want ok %v", c.cfg, err, c.ok)
		}
	}
}
