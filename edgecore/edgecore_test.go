package edgecore

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte("x"), 0o600)
	good := "nodeName: edge-1\ncloud:\n  url: wss://cloud:10000/v1/connect\n  credentialsFile: " + ca +
		"\n  caFile: " + ca + "\ndataDir: " + dir + "\n"
	cases := []struct{ yaml, field string }{
		{strings.Replace(good, "edge-1", "Edge_1", 1), "nodeName"},
		{strings.Replace(good, "wss://", "http://", 1), "cloud.url"},
		{strings.Replace(good, "  credentialsFile: "+ca+"\n", "", 1), "cloud.credentialsFile"},
		{strings.Replace(good, "  caFile: "+ca, "  caFile: "+ca+".missing", 1), "cloud.caFile"},
		{strings.Replace(good, "  caFile: "+ca+"\n", "", 1), "cloud.caFile"},
		{strings.Replace(good, "cloud:\n", "cloud:\n  token: abcdef.0123456789abcdef\n", 1), "cloud.token"},
		{good + "runtime: docker\n", "runtime"},
		{good + "nodeIP: 300.1.1.1\n", "nodeIP"},
		{good + "maxPods: -1\n", "maxPods"},
		{good + "reconnectInitial: 10s\nreconnectMax: 1s\n", "reconnectMax"},
		{good + "podResyncInterval: -5s\n", "podResyncInterval"},
		{good + "podWorkers: -2\n", "podWorkers"},
		{good + "devices:\n  mqtt:\n    broker: mosquitto\n", "devices.mqtt.broker"},
		{good + "devices:\n  mqtt:\n    url: tcp://127.0.0.1:1883\n", "devices.mqtt.url"},
		{good + "devices:\n  mqtt:\n    broker: external\n    addr: 127.0.0.1:1883\n", "devices.mqtt.addr"},
		{good + "devices:\n  mqtt:\n    broker: external\n    url: ws://broker:8883\n", "devices.mqtt.url"},
		{good + "devices:\n  mqtt:\n    broker: external\n    url: ssl://broker:8883\n", "devices.mqtt.caFile"},
		{good + "devices:\n  mqtt:\n    broker: external\n    caFile: " + ca + "\n", "devices.mqtt.caFile"},
		{good + "devices:\n  mqtt:\n    broker: external\n    certFile: " + ca + "\n", "devices.mqtt.certFile"},
		{good + "devices:\n  mqtt:\n    caFile: " + ca + "\n", "devices.mqtt.caFile"},
		{good + "devices:\n  mqtt:\n    certFile: " + ca + "\n", "devices.mqtt.certFile"},
		// A broker on the network without authentication (audit M3).
		{good + "devices:\n  mqtt:\n    addr: 0.0.0.0:1883\n    allowAnonymous: true\n", "devices.mqtt.allowAnonymous"},
		{good + "devices:\n  mqtt:\n    addr: :1883\n    allowAnonymous: true\n", "devices.mqtt.allowAnonymous"},
		// A broker on the network without TLS, unless allowed explicitly.
		{good + "devices:\n  mqtt:\n    addr: 0.0.0.0:1883\n", "devices.mqtt.addr"},
		{good + "devices:\n  mqtt:\n    addr: :1883\n", "devices.mqtt.addr"},
		{good + "devices:\n  mqtt:\n    broker: external\n    allowInsecure: true\n", "devices.mqtt.allowInsecure"},
		{good + "devices:\n  mqtt:\n    mapperProtocols: [Modbus]\n", "devices.mqtt.mapperProtocols"},
		{good + "devices:\n  mqtt:\n    mapperProtocols: [../x]\n", "devices.mqtt.mapperProtocols"},
		{good + "devices:\n  mqtt:\n    mapperProtocols: [modbus, modbus]\n", "devices.mqtt.mapperProtocols"},
		{good + "devices:\n  mqtt:\n    mapperProtocols: [modbus]\n    username: mapper-modbus\n    password: p\n", "devices.mqtt.username"},
		{good + "devices:\n  mqtt:\n    broker: external\n    mapperProtocols: [modbus]\n", "devices.mqtt.mapperProtocols"},
		{good + "devices:\n  mqtt:\n    username: u\n", "devices.mqtt.username"},
		{good + "devices:\n  mqtt:\n    username: mapper\n    password: p\n", "devices.mqtt.username"},
		{good + "devices:\n  mqtt:\n    maxClients: -1\n", "devices.mqtt.maxClients"},
		{good + "devices:\n  mqtt:\n    addr: localhost\n", "devices.mqtt.addr"},
		{good + "devices:\n  mqtt:\n    password: p\n", "devices.mqtt.password"},
		{good + "devices:\n  mqtt:\n    username: u\n    passwordFile: " + ca + ".missing\n", "devices.mqtt.passwordFile"},
		{good + "devices:\n  mqtt:\n    username: u\n    password: p\n    passwordFile: " + ca + "\n", "devices.mqtt.passwordFile"},
		{good + "devices:\n  reportInterval: -1s\n", "devices.reportInterval"},
		{good + "dns:\n  enable: true\n  addr: nope\n", "dns.addr"},
		{good + "dns:\n  enable: true\n  addr: 127.0.0.1:53\n  allowed: [10.88.0.0/33]\n", "dns.allowed"},
		{good + "dns:\n  enable: true\n  addr: 127.0.0.1:53\n  rate: -1\n", "dns.rate"},
		// Pods find a name server on port 53 only.
		{good + "runtime: cri\ndns:\n  enable: true\n  addr: 10.0.0.1:5353\n", "dns.addr"},
		{good + "services:\n  serviceCIDR: 10.96.0.0\n", "services.serviceCIDR"},
		{good + "services:\n  serviceCIDR: 10.96.0.1/12\n", "services.serviceCIDR"},
		{good + "services:\n  serviceCIDR: 10.0.0.0/7\n", "services.serviceCIDR"},
		{good + "services:\n  serviceCIDR: fd00::/108\n", "services.serviceCIDR"},
		// Never another program's table.
		{good + "services:\n  table: filter\n", "services.table"},
		{good + "services:\n  sources: [10.88.0.0/33]\n", "services.sources"},
		{good + "services:\n  sources: [fd00::/64]\n", "services.sources"},
		{good + "services:\n  table: tether-x y\n", "services.table"},
		{good + "nodeHealth:\n  period: -1s\n", "nodeHealth.period"},
		{good + "nodeHealth:\n  memoryAvailable: -1Mi\n", "nodeHealth.memoryAvailable"},
		{good + "nodeHealth:\n  nodefsAvailablePercent: 100\n", "nodeHealth.nodefsAvailablePercent"},
		{good + "nodeHealth:\n  imagefsAvailablePercent: -3\n", "nodeHealth.imagefsAvailablePercent"},
		{good + "nodeHealth:\n  pidAvailablePercent: 120\n", "nodeHealth.pidAvailablePercent"},
	}
	for _, c := range cases {
		var cfg Config
		if err := yaml.UnmarshalStrict([]byte(c.yaml), &cfg); err != nil {
			t.Fatalf("%s: %v", c.field, err)
		}
		err := cfg.validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.field+":") {
			t.Errorf("want an error naming %s, got %v", c.field, err)
		}
	}
	var cfg Config
	if err := yaml.UnmarshalStrict([]byte(good+"nodeNmae: typo\n"), &cfg); err == nil || !strings.Contains(err.Error(), "nodeNmae") {
		t.Errorf("unknown field: got %v", err)
	}
	if err := yaml.UnmarshalStrict([]byte(good), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if cfg.MaxPods != 110 || cfg.Runtime != "cri" || cfg.CRI.RootDir != dir || cfg.ReconnectMax.Duration == 0 {
		t.Errorf("defaults not filled: %+v", cfg)
	}
	if h := cfg.NodeHealth; h.Period.Duration != 5*time.Second || h.MemoryAvailable.String() != "100Mi" ||
		h.NodeFSAvailablePercent != 10 || h.ImageFSAvailablePercent != 15 || h.PIDAvailablePercent != 10 ||
		h.PressureTransitionPeriod.Duration != 5*time.Minute {
		t.Errorf("node health defaults not filled: %+v", h)
	}
	if *cfg.Services.Proxy {
		t.Error("services.proxy on without dns")
	}
	if *cfg.InCluster.Enable {
		t.Error("inCluster on without dns")
	}
	if d := cfg.Devices; !*d.Enable || d.MQTT.Broker != "embedded" || d.MQTT.Addr != "127.0.0.1:1883" || d.ReportInterval.Duration != time.Second {
		t.Errorf("device defaults not filled: %+v", d)
	}
	// The resolver becomes the pods' cluster DNS.
	cfg = Config{}
	if err := yaml.UnmarshalStrict([]byte(good+"runtime: cri\ndns:\n  enable: true\n  addr: 10.0.0.1:53\n  allowed: [10.88.0.0/16]\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	// With the resolver, ClusterIPs are routed too, by default.
	if s := cfg.Services; !*s.Proxy || s.ServiceCIDR != "10.96.0.0/12" || s.Table != "tether" || fmt.Sprint(s.Sources) != "[10.88.0.0/16]" {
		t.Errorf("services defaults with dns and cri: %+v", s)
	}
	// And the pods get the in-cluster API, as on any node.
	if ic := cfg.InCluster; !*ic.Enable || ic.Port != 10551 || ic.WriteTimeout.Duration != 15*time.Second {
		t.Errorf("inCluster defaults with dns and cri: %+v", ic)
	}
	cfg = Config{}
	if err := yaml.UnmarshalStrict([]byte(good+"runtime: cri\ndns:\n  enable: true\n  addr: 10.0.0.1:53\n  allowed: [10.88.0.0/16]\ninCluster:\n  enable: false\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil || *cfg.InCluster.Enable {
		t.Errorf("inCluster.enable: false with dns: on=%v, err %v", *cfg.InCluster.Enable, err)
	}
	if len(cfg.CRI.ClusterDNS) != 1 || cfg.CRI.ClusterDNS[0] != "10.0.0.1" {
		t.Errorf("cri.clusterDNS %v, want the resolver's 10.0.0.1", cfg.CRI.ClusterDNS)
	}
	if rc := cfg.DNS.resolverConfig("cluster.local"); len(rc.Allowed) != 3 || rc.Allowed[2].String() != "10.88.0.0/16" {
		t.Errorf("resolver allowed %v, want loopback and 10.88.0.0/16", rc.Allowed)
	}
	cfg = Config{}
	pw := filepath.Join(dir, "mqtt-password")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	if err := yaml.UnmarshalStrict([]byte(good+"devices:\n  mqtt:\n    broker: external\n    username: edge\n    passwordFile: "+pw+"\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if m := cfg.Devices.MQTT; m.URL != "tcp://127.0.0.1:1883" || m.password() != "s3cret" || m.Addr != "" {
		t.Errorf("external broker defaults: %+v", m)
	}
	// The embedded broker beyond loopback: with TLS, or allowed insecure.
	for _, extra := range []string{"    certFile: " + ca + "\n    keyFile: " + ca + "\n", "    allowInsecure: true\n"} {
		cfg = Config{}
		if err := yaml.UnmarshalStrict([]byte(good+"devices:\n  mqtt:\n    addr: 0.0.0.0:1883\n"+extra), &cfg); err != nil {
			t.Fatal(err)
		}
		if err := cfg.validate(); err != nil {
			t.Errorf("0.0.0.0 with %q: %v", extra, err)
		}
	}
}

// The in-memory runtime runs only when asked for by name, and says at
// start that nothing really runs; without runtime:, edgecore wants
// containerd.
func TestFakeRuntimeOnlyByNameWithWarning(t *testing.T) {
	off := false
	var logs bytes.Buffer
	cfg := Config{NodeName: "edge-1", Cloud: unreachableCloud(), DataDir: t.TempDir(), StaticPodPath: NoStaticPods,
		MetaServer: MetaServerConfig{Enable: &off}, Devices: DevicesConfig{Enable: &off},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	cfg.CRI.Endpoint = filepath.Join(t.TempDir(), "no-containerd.sock")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("no runtime given, no containerd: %v", err)
	}
	cfg.Runtime = "fake"
	ec, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ec.Close()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "no container runs") {
		t.Errorf("no warning about the fake runtime: %s", logs.String())
	}
}
