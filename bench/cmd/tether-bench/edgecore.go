package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/bench"
	"github.com/tether-edge/tether/childproc"
	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/credentials"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/simulator/netns"
)

const (
	edgeNode = "bench-edgecore-idle"
	// edgeSettle is how long after the node turned Ready RSS is read: past
	// the start's allocations and a few heartbeats.
	edgeSettle = 10 * time.Second
)

// edgecoreIdle runs the real cloudcore and edgecore binaries, one node with
// the fake runtime, and reads edgecore's RSS once the node is Ready and
// settled (as e2e's TestCRIEdgecoreBinaryRSS does with the CRI runtime).
// With a WAN (--netns), cloudcore and edgecore run in its namespaces, on
// either side of its emulated link, and the link counts edgecore's idle
// traffic at the IP layer over cfg.EdgeIdle.
func edgecoreIdle(ctx context.Context, cfg Config, cp *controlplane.ControlPlane, wan *netns.WAN, binDir, dir string, log *slog.Logger) (*bench.EdgecoreIdle, error) {
	log.Info("edgecore idle RSS", slog.Bool("netns", wan != nil))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	spec := edgeSpec{node: edgeNode, host: "127.0.0.1", nodeIP: "127.0.0.1"}
	if wan != nil {
		spec.cloudNS, spec.ns, spec.host, spec.nodeIP = wan.Cloud, wan.Edges, wan.HubHost(), wan.Link.B.Addr.String()
	}
	run, err := startEdge(ctx, cp, binDir, dir, spec)
	if err != nil {
		return nil, err
	}
	defer run.stop()
	select {
	case <-time.After(edgeSettle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p, err := bench.ReadProc(run.edgecore.proc.Pid())
	if err != nil {
		return nil, fmt.Errorf("edgecore: %w", err)
	}
	log.Info("edgecore idle", slog.Int64("rss", p.RSSBytes))
	e := &bench.EdgecoreIdle{RSSBytes: p.RSSBytes, Runtime: "fake", SettleSeconds: edgeSettle.Seconds()}
	if wan == nil {
		return e, nil
	}
	t0, a := time.Now(), wan.Link.Stats()
	select {
	case <-time.After(cfg.EdgeIdle):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if run.edgecore.exited() {
		return nil, errors.New("edgecore exited; see " + run.edgecore.logFile)
	}
	secs, b := time.Since(t0).Seconds(), wan.Link.Stats()
	// The link's B end is edgecore's: B to A is up.
	e.Link = &bench.Bandwidth{Seconds: secs, Layer: "ip",
		UplinkBitsPerSecond:   float64(b.BToA.Bytes-a.BToA.Bytes) * 8 / secs,
		DownlinkBitsPerSecond: float64(b.AToB.Bytes-a.AToB.Bytes) * 8 / secs}
	e.LinkDelayMs = float64(cfg.NetnsDelay) / float64(time.Millisecond)
	log.Info("edgecore idle link", slog.Float64("upBitsPerSecond", e.Link.UplinkBitsPerSecond),
		slog.Float64("downBitsPerSecond", e.Link.DownlinkBitsPerSecond))
	return e, nil
}

// edgeSpec is what startEdge runs: cloudcore in cloudNS listening on host
// and one edgecore in ns (nil: the host's namespace) with nodeIP, both with
// the fake runtime's defaults unless cloud and edge adjust their
// configurations.
type edgeSpec struct {
	node         string
	cloudNS, ns  *netns.Namespace
	host, nodeIP string
	cloud        func(*cloudcore.Config)
	edge         func(*edgecore.Config)
}

// edgeRun is cloudcore and one edgecore binary running, the edge's node
// Ready.
type edgeRun struct {
	cloudcore, edgecore *process
	node                string
	client              kubernetes.Interface
}

// startEdge runs the cloudcore and edgecore binaries of spec (their files
// in dir) and waits until the node is Ready. On error it stops what it
// started.
func startEdge(ctx context.Context, cp *controlplane.ControlPlane, binDir, dir string, spec edgeSpec) (_ *edgeRun, err error) {
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		return nil, err
	}
	r := &edgeRun{node: spec.node, client: client}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	ln, err := spec.cloudNS.Listen("tcp", net.JoinHostPort(spec.host, "0"))
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	// The node's identity first: the CA Secret then exists when cloudcore
	// starts and loads it.
	caFile, credFile, err := enrollEdge(ctx, client, spec.node, dir)
	if err != nil {
		return nil, err
	}
	ccCfg := cloudcore.Config{Kubeconfig: cp.Kubeconfig(), ListenAddr: addr, HealthAddr: "127.0.0.1:0",
		CertIPs: []string{spec.host}}
	if spec.cloud != nil {
		spec.cloud(&ccCfg)
	}
	if r.cloudcore, err = startProcess(spec.cloudNS, filepath.Join(binDir, "cloudcore"), ccCfg, filepath.Join(dir, "cloudcore")); err != nil {
		return nil, err
	}

	ecCfg := edgecore.Config{
		NodeName: spec.node,
		Cloud: edgecore.CloudConfig{URL: "wss://" + addr + "/v1/connect", CAFile: caFile,
			CredentialsFile: credFile},
		DataDir:       filepath.Join(dir, "edgecore"),
		Runtime:       "fake",
		NodeIP:        spec.nodeIP,
		StaticPodPath: "-",
		MetaServer:    edgecore.MetaServerConfig{Addr: "127.0.0.1:0"},
	}
	if spec.edge != nil {
		spec.edge(&ecCfg)
	}
	if r.edgecore, err = startProcess(spec.ns, filepath.Join(binDir, "edgecore"), ecCfg, filepath.Join(dir, "edgecore")); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := poll(rctx, 250*time.Millisecond, func() (bool, error) {
		if r.cloudcore.exited() {
			return false, errors.New("cloudcore exited; see " + r.cloudcore.logFile)
		}
		if r.edgecore.exited() {
			return false, errors.New("edgecore exited; see " + r.edgecore.logFile)
		}
		n, err := client.CoreV1().Nodes().Get(rctx, spec.node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return nil, fmt.Errorf("node %s Ready: %w", spec.node, err)
	}
	return r, nil
}

// enrollEdge gives node its identity as `edgecore join` would, and writes
// what join writes into dir: the CA bundle (ca.crt) and the node's key and
// certificate (credentials.pem, mode 0600). It registers the Node and
// issues the certificate directly from cloudcore's CA (its Secret, created
// with its namespace if missing) rather than through a join token: the
// bench measures a joined edgecore, and `edgecore join` itself is
// exercised by the e2e tests.
func enrollEdge(ctx context.Context, client kubernetes.Interface, node, dir string) (caFile, credFile string, err error) {
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: certs.DefaultNamespace}},
		metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", "", fmt.Errorf("namespace %s: %w", certs.DefaultNamespace, err)
	}
	log := slog.New(slog.DiscardHandler)
	ca, err := certs.LoadOrCreateCA(ctx, client, certs.DefaultNamespace, certs.DefaultCASecret, log)
	if err != nil {
		return "", "", err
	}
	svc, err := enroll.New(enroll.Config{CA: ca, Bundle: ca.CertPEM(), Nodes: &enroll.KubeNodes{Client: client}, Log: log})
	if err != nil {
		return "", "", err
	}
	key, err := pki.NewKey()
	if err != nil {
		return "", "", err
	}
	certPEM, err := svc.Direct(ctx, node, &key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("enroll %s: %w", node, err)
	}
	cred, err := credentials.Encode(certPEM, key)
	if err != nil {
		return "", "", err
	}
	caFile, credFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "credentials.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(credFile, cred, 0o600); err != nil {
		return "", "", err
	}
	return caFile, credFile, nil
}

// stop deletes the node and stops edgecore and cloudcore.
func (r *edgeRun) stop() {
	r.client.CoreV1().Nodes().Delete(context.Background(), r.node, metav1.DeleteOptions{})
	if r.edgecore != nil {
		r.edgecore.stop()
	}
	if r.cloudcore != nil {
		r.cloudcore.stop()
	}
}

// process is a binary run with its configuration as a YAML (JSON) file.
type process struct {
	proc    *childproc.Process
	logFile string
}

// startProcess writes cfg to base.yaml and runs bin --config base.yaml in
// ns (nil: the host's namespace), logging to base.log.
func startProcess(ns *netns.Namespace, bin string, cfg any, base string) (*process, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(base+".yaml", b, 0o600); err != nil {
		return nil, err
	}
	// Not bound to a context: stop ends it, SIGTERM first.
	p, err := childproc.Start(ns.Command(context.Background(), bin, "--config", base+".yaml"), childproc.Options{Log: base + ".log"})
	if err != nil {
		return nil, err
	}
	return &process{proc: p, logFile: base + ".log"}, nil
}

func (p *process) exited() bool { return p.proc.Exited() }

// stop sends SIGTERM and, after 20s, SIGKILL.
func (p *process) stop() { p.proc.Stop(20 * time.Second) }

// goBenchmarks reads cfg.GoBench into rep and takes the twin figures from
// it.
func goBenchmarks(cfg Config, rep *bench.Report) {
	if cfg.GoBench == "" {
		rep.SetUnavailable("goBenchmarks", errors.New("no --gobench file"))
		rep.SetUnavailable("twin", errors.New("no --gobench file to take BenchmarkTwinUpdate from"))
		return
	}
	f, err := os.Open(cfg.GoBench)
	if err != nil {
		rep.SetUnavailable("goBenchmarks", err)
		rep.SetUnavailable("twin", err)
		return
	}
	defer f.Close()
	bs, err := bench.ParseGoBenchmarks(f)
	if err != nil {
		rep.SetUnavailable("goBenchmarks", err)
	}
	if _, err := f.Seek(0, 0); err == nil {
		fails, _ := bench.GoBenchFailures(f)
		for _, l := range fails {
			rep.Errors = append(rep.Errors, "go test -bench: "+l)
		}
	}
	rep.GoBenchmarks = bs
	rep.Twin = twinFigures(bs)
	if rep.Twin == nil {
		rep.SetUnavailable("twin", fmt.Errorf("neither BenchmarkTwinUpdates nor BenchmarkTwinUpdate in %s", cfg.GoBench))
	} else if rep.Twin.DeviceToAPI == nil && rep.DeviceLag == nil {
		rep.SetUnavailable("twin.deviceToAPI", errors.New("not available from the Go benchmarks (deviceLag, measured with the edgecore binary, has it)"))
	}
}

// twinFigures takes the twin update throughput from edgecore/devicetwin's
// BenchmarkTwinUpdates (the twin component end to end: MQTT on an embedded
// broker, decode, apply, bbolt, result published; its devices=100/window=64
// case, else the fastest case), and the engine alone from devices/twin's
// BenchmarkTwinUpdate. Nil when neither ran.
func twinFigures(bs []bench.GoBenchmark) *bench.Twin {
	const preferred = "BenchmarkTwinUpdates/devices=100/window=64"
	var (
		tw      bench.Twin
		which   string
		sources []string
	)
	for _, b := range bs {
		switch {
		case strings.HasPrefix(b.Name, "BenchmarkTwinUpdates/") && strings.HasSuffix(b.Package, "/edgecore/devicetwin"):
			v, ok := b.Metrics["updates/s"]
			if !ok {
				continue
			}
			if which != preferred && (b.Name == preferred || v > tw.UpdatesPerSecond) {
				tw.UpdatesPerSecond, which = v, b.Name
			}
		case b.Name == "BenchmarkTwinUpdate" && strings.HasSuffix(b.Package, "/devices/twin"):
			if ns := b.Metrics["ns/op"]; ns > 0 {
				tw.EngineUpdatesPerSecond = 1e9 / ns
				sources = append(sources, "engine: devices/twin BenchmarkTwinUpdate")
			}
		}
	}
	if which != "" {
		sources = append([]string{"end to end: edgecore/devicetwin " + which}, sources...)
	}
	if len(sources) == 0 {
		return nil
	}
	tw.Source = strings.Join(sources, "; ")
	return &tw
}
