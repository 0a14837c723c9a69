//go:build integration

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore/hub"
	"github.com/tether-edge/tether/protocol"
)

// A Deployment scheduled by the real scheduler onto an edge node reaches
// Running in the API server; deleting a pod removes it from the edge store.
func TestDeploymentRunsOnEdge(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := startEdge(t, c, "e2e-deploy")
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)

	replicas := int32(2)
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"node-role.kubernetes.io/edge": "", corev1.LabelHostname: e.name},
					Containers:   []corev1.Container{{Name: "web", Image: "busybox:e2e", Command: []string{"httpd", "-f"}}},
				},
			},
		},
	}
	applied := time.Now()
	if _, err := client.AppsV1().Deployments(ns).Create(t.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var inStore time.Duration
	eventually(t, 60*time.Second, "2 pods in the edge store", func() (bool, error) {
		n := 0
		for _, o := range e.objects(protocol.KindPod) {
			if o.Namespace == ns {
				n++
			}
		}
		if n == 2 && inStore == 0 {
			inStore = time.Since(applied)
		}
		return n == 2, nil
	})
	eventually(t, 60*time.Second, "2 pods Running in the API server", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == e.name && podReady(&p) {
				running++
			}
		}
		return running == 2, nil
	})
	t.Logf("kubectl apply to both pods in the edge store: %s; to Running in the API server: %s",
		inStore.Round(time.Millisecond), time.Since(applied).Round(time.Millisecond))

	// Delete one pod: graceful deletion, confirmed by the edge, then gone
	// from the API server and from the edge store.
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	victim := pods.Items[0]
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "deleted pod gone from the API server", func() (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(t.Context(), victim.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	eventually(t, 30*time.Second, "deleted pod gone from the edge store", func() (bool, error) {
		_, ok := e.objects(protocol.KindPod)[string(victim.UID)]
		return !ok, nil
	})
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// A configmap goes only to the nodes whose pods use it, and its changes
// follow.
func TestConfigMapGoesOnlyWhereUsed(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	a := startEdge(t, c, "e2e-cm-a")
	b := startEdge(t, c, "e2e-cm-b")
	cm, err := client.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"mode": "one"}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pa := barePod(ns, "uses-cm", a.name)
	pa.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}}
	pb := barePod(ns, "plain", b.name)
	for _, p := range []*corev1.Pod{pa, pb} {
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "the configmap at node a", func() (bool, error) {
		o := a.byName(protocol.KindConfigMap, ns, "settings")
		return o != nil && o.ResourceVersion == cm.ResourceVersion, nil
	})
	eventually(t, 30*time.Second, "node b's pod at node b", func() (bool, error) {
		return b.byName(protocol.KindPod, ns, "plain") != nil, nil
	})
	cm.Data["mode"] = "two"
	cm, err = client.CoreV1().ConfigMaps(ns).Update(t.Context(), cm, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the configmap change at node a", func() (bool, error) {
		o := a.byName(protocol.KindConfigMap, ns, "settings")
		if o == nil || o.ResourceVersion != cm.ResourceVersion {
			return false, nil
		}
		got, err := protocol.DecodeConfigMap(o.Data)
		return err == nil && got.Data["mode"] == "two", err
	})
	if o := b.byName(protocol.KindConfigMap, ns, "settings"); o != nil {
		t.Fatalf("node b holds configmap settings, which none of its pods uses")
	}
}

// cloudcore killed and restarted: every edge reconnects and resyncs with no
// object message, because nothing changed.
func TestHubRestartResyncsNothing(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	var edges []*edge
	for _, n := range []string{"e2e-restart-a", "e2e-restart-b", "e2e-restart-c"} {
		e := startEdge(t, c, n)
		edges = append(edges, e)
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "p-"+n, n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range edges {
		eventually(t, 30*time.Second, "pod at "+e.name, func() (bool, error) {
			return e.byName(protocol.KindPod, ns, "p-"+e.name) != nil, nil
		})
	}
	// Let pod statuses settle (a status write is not sent down: the pod's
	// version, dispatch.PodVersion, ignores the status).
	eventually(t, 30*time.Second, "pods Running", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		return len(pods.Items) == 3, nil
	})
	waitSettled(t, ns, edges...)
	before := map[string]int{}
	for _, e := range edges {
		before[e.name] = e.ec.Agent.State().Sessions
	}

	c.stop()
	c.start(nil)
	for _, e := range edges {
		eventually(t, 30*time.Second, e.name+" resynced with the new hub", func() (bool, error) {
			s := e.ec.Agent.State()
			return s.Sessions > before[e.name] && s.Connected && s.LastResync != nil, nil
		})
		r := e.ec.Agent.State().LastResync
		if r.Upserts != 0 || r.Deletes != 0 || r.Bytes != 0 {
			t.Errorf("%s: resync after the restart sent %d upserts, %d deletes, %d bytes; want none",
				e.name, r.Upserts, r.Deletes, r.Bytes)
		}
	}
	st := c.cc.Hub.Stats()
	t.Logf("hub after restart: %d resyncs, %d resync messages, %d resync bytes", st.Resyncs, st.ResyncMessages, st.ResyncBytes)
	if st.ResyncMessages != 0 {
		t.Errorf("restarted hub sent %d object messages in resyncs, want 0", st.ResyncMessages)
	}
}

// While the edge is cut off: a pod is created, another deleted, and a third
// deleted and created again with the same name (a new UID). On reconnect the
// edge gets exactly those changes.
func TestChangesWhileDisconnected(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := startEdge(t, c, "e2e-offline")
	for _, n := range []string{"stays", "goes", "replaced"} {
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, n, e.name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "3 pods at the edge", func() (bool, error) {
		return len(e.objects(protocol.KindPod)) == 3, nil
	})
	oldReplaced := e.byName(protocol.KindPod, ns, "replaced").UID
	stays := e.byName(protocol.KindPod, ns, "stays").UID

	e.link.Cut()
	eventually(t, 10*time.Second, "edge notices the cut", func() (bool, error) {
		return !e.ec.Agent.State().Connected, nil
	})
	created, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "new", e.name), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Graceful deletion: the pod waits, Terminating, for the edge.
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), "goes", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Forced deletion and a new pod of the same name.
	zero := int64(0)
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), "replaced", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "replaced pod gone", func() (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(t.Context(), "replaced", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	replacement, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "replaced", e.name), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	e.link.Heal()
	eventually(t, 30*time.Second, "edge holds exactly stays, new and the replacement", func() (bool, error) {
		got := e.objects(protocol.KindPod)
		_, a := got[stays]
		_, b := got[string(created.UID)]
		_, c := got[string(replacement.UID)]
		_, old := got[oldReplaced]
		return len(got) == 3 && a && b && c && !old, nil
	})
	eventually(t, 30*time.Second, "pod deleted while away is gone from the API server", func() (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(t.Context(), "goes", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	eventually(t, 30*time.Second, "new pods Running", func() (bool, error) {
		for _, n := range []string{"new", "replaced"} {
			p, err := client.CoreV1().Pods(ns).Get(t.Context(), n, metav1.GetOptions{})
			if err != nil || p.Status.Phase != corev1.PodRunning {
				return false, err
			}
		}
		return true, nil
	})
}

// An edge whose link is cut goes NotReady once its lease runs out, and Ready
// again when the link returns.
func TestNodeReadinessFollowsLink(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := startEdge(t, c, "e2e-lease")
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	pod, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "steady", e.name), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitPodReady(t, ns, pod.Name, corev1.ConditionTrue)
	// Stays Ready over several lease periods while connected.
	time.Sleep(nodeMonitorGrace + 2*time.Second)
	waitNodeReady(t, e.name, corev1.ConditionTrue, time.Second)

	e.link.Cut()
	cut := time.Now()
	waitNodeReady(t, e.name, corev1.ConditionUnknown, nodeMonitorGrace+20*time.Second)
	t.Logf("NotReady %s after the cut", time.Since(cut).Round(time.Millisecond))
	// The node lifecycle controller marks the node's pods not ready.
	waitPodReady(t, ns, pod.Name, corev1.ConditionFalse)

	e.link.Heal()
	healed := time.Now()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	t.Logf("Ready %s after the link returned", time.Since(healed).Round(time.Millisecond))
	// The edge reports its pods again: the pod is Ready, with the same UID
	// (nothing was recreated).
	waitPodReady(t, ns, pod.Name, corev1.ConditionTrue)
	t.Logf("pod Ready again %s after the link returned", time.Since(healed).Round(time.Millisecond))
	got, err := client.CoreV1().Pods(ns).Get(t.Context(), pod.Name, metav1.GetOptions{})
	if err != nil || got.UID != pod.UID {
		t.Fatalf("pod after the outage: %v, uid %s want %s", err, got.UID, pod.UID)
	}
}

func waitPodReady(t *testing.T, ns, name string, want corev1.ConditionStatus) {
	t.Helper()
	eventually(t, 30*time.Second, "pod "+name+" Ready="+string(want), func() (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == want, nil
			}
		}
		return false, nil
	})
}

// Bad input is refused with a clear error, and the hub goes on serving the
// others.
func TestBadInputIsRefused(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	good := startEdge(t, c, "e2e-bad-good")
	waitNodeReady(t, good.name, corev1.ConditionTrue, 30*time.Second)

	pool := x509.NewCertPool()
	pool.AddCert(c.cc.CA.Cert)
	url := "wss://" + c.addr + hub.Path
	dial := func(cert *tls.Certificate) (*websocket.Conn, *http.Response, error) {
		tc := &tls.Config{RootCAs: pool}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		dialer := websocket.Dialer{TLSClientConfig: tc, HandshakeTimeout: 5 * time.Second}
		return dialer.DialContext(t.Context(), url, nil)
	}

	// No client certificate, or a join token as a bearer token: 401 before
	// any websocket (join tokens are never accepted on the tunnel).
	_, resp, err := dial(nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no certificate: got %v, response %v; want 401", err, resp)
	}
	bearer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second}
	_, resp, err = bearer.DialContext(t.Context(), url, http.Header{"Authorization": {"Bearer " + c.joinToken("")}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("join token as bearer: got %v, response %v; want 401", err, resp)
	}

	// A session that says Hello properly, then misbehaves.
	session := func(node string) *websocket.Conn {
		ws, _, err := dial(enrollCert(t, c, node))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		send(t, ws, &protocol.Frame{Hello: &protocol.Hello{ProtocolVersion: protocol.Version, MinVersion: 1, NodeName: node}})
		if f := recv(t, ws); f.Welcome == nil {
			t.Fatalf("want Welcome, got %s", f.Type())
		}
		return ws
	}

	// An unknown message type: an Error frame, and the session goes on.
	ws := session("e2e-bad-unknown")
	unknown := []byte{0xa1, 0x18, 0x63, 0xa0} // {99: {}}
	if err := ws.WriteMessage(websocket.BinaryMessage, unknown); err != nil {
		t.Fatal(err)
	}
	f := recvSkipping(t, ws)
	if f.Error == nil || f.Error.Code != protocol.ErrorUnknownMessage {
		t.Fatalf("unknown message: want Error UnknownMessage, got %+v", f)
	}
	send(t, ws, &protocol.Frame{Heartbeat: &protocol.Heartbeat{}})
	if f := recvSkipping(t, ws); f.Heartbeat == nil {
		t.Fatalf("session did not go on after an unknown message: got %s", f.Type())
	}

	// A frame over the size limit: the session is closed with 1009.
	ws = session("e2e-bad-large")
	if err := ws.WriteMessage(websocket.BinaryMessage, make([]byte, protocol.MaxFrameSize+1)); err != nil {
		t.Fatal(err)
	}
	var closeErr *websocket.CloseError
	for {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		if !errors.As(err, &closeErr) || closeErr.Code != websocket.CloseMessageTooBig {
			t.Fatalf("oversized frame: want close 1009, got %v", err)
		}
		break
	}
	t.Logf("oversized frame refused: %v", closeErr)

	// A Hello of an unsupported version: an Error naming both versions.
	ws2, _, err := dial(enrollCert(t, c, "e2e-bad-version"))
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.Close()
	send(t, ws2, &protocol.Frame{Hello: &protocol.Hello{ProtocolVersion: 99, MinVersion: 99, NodeName: "e2e-bad-version"}})
	if f := recv(t, ws2); f.Error == nil || f.Error.Code != protocol.ErrorVersion || !strings.Contains(f.Error.Message, "99") {
		t.Fatalf("bad version: got %+v", f)
	}

	// The well-behaved edge was never disturbed and still syncs.
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "after", good.name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "good edge still syncs", func() (bool, error) {
		return good.byName(protocol.KindPod, ns, "after") != nil, nil
	})
	if s := good.ec.Agent.State(); s.Sessions != 1 {
		t.Errorf("good edge had %d sessions, want 1", s.Sessions)
	}
	if st := c.cc.Hub.Stats(); st.BadFrames < 1 || st.Refused < 1 {
		t.Errorf("hub stats %+v: want bad frames and refusals counted", st)
	}
}

func send(t *testing.T, ws *websocket.Conn, f *protocol.Frame) {
	t.Helper()
	b, err := protocol.Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, ws *websocket.Conn) *protocol.Frame {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	f, err := protocol.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// recvSkipping returns the next frame that is not ResyncDone.
func recvSkipping(t *testing.T, ws *websocket.Conn) *protocol.Frame {
	t.Helper()
	for {
		if f := recv(t, ws); f.ResyncDone == nil {
			return f
		}
	}
}
