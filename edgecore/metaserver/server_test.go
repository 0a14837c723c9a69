package metaserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

const node = "edge-1"

type fixture struct {
	t        testing.TB
	db       *store.DB
	stateDir string
	s        *Server
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{t: t, db: db, stateDir: t.TempDir()}
	f.s = f.newServer(cfg)
	return f
}

func (f *fixture) newServer(cfg Config) *Server {
	f.t.Helper()
	cfg.NodeName = node
	cfg.StateDir = f.stateDir
	cfg.NodeLabels = map[string]string{"tether.io/site": "store-1"}
	cfg.NodeStatus = func() *corev1.NodeStatus {
		return &corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "arm64"},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Clients == nil {
		cfg.Clients = testClients
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg, f.db)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func testPod(ns, name string, labels map[string]string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

// put stores objects as the agent does, the cloud's resourceVersion
// included, then levels the cache with the store.
func (f *fixture) put(objs ...any) {
	f.t.Helper()
	err := f.db.Update(func(tx *store.Tx) error {
		for _, o := range objs {
			var (
				kind protocol.Kind
				meta metav1.Object
				data []byte
				err  error
			)
			meta = o.(metav1.Object)
			rv, _ := strconv.Atoi(meta.GetResourceVersion())
			meta.SetResourceVersion(strconv.Itoa(rv + 1)) // each put is a new version
			switch o := o.(type) {
			case *corev1.Pod:
				kind, meta = protocol.KindPod, o
				data, err = protocol.EncodePod(o)
			case *corev1.ConfigMap:
				kind, meta = protocol.KindConfigMap, o
				data, err = protocol.EncodeConfigMap(o)
			case *corev1.Secret:
				kind, meta = protocol.KindSecret, o
				data, err = protocol.EncodeSecret(o)
			case *corev1.Service:
				kind, meta = protocol.KindService, o
				data, err = protocol.EncodeService(o)
			case *discoveryv1.EndpointSlice:
				kind, meta = protocol.KindEndpointSlice, o
				data, err = protocol.EncodeEndpointSlice(o)
			}
			if err != nil {
				return err
			}
			err = tx.PutObject(&protocol.Object{Kind: kind, UID: string(meta.GetUID()), Namespace: meta.GetNamespace(),
				Name: meta.GetName(), ResourceVersion: meta.GetResourceVersion(), Data: data})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) del(kind protocol.Kind, uid types.UID) {
	f.t.Helper()
	err := f.db.Update(func(tx *store.Tx) error {
		_, err := tx.DeleteObject(kind, string(uid))
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) sync() {
	f.t.Helper()
	if err := f.s.sync(false); err != nil {
		f.t.Fatal(err)
	}
}

// request sends a request to the handler from remote (default loopback) and decodes the answer
// into out, if not nil.
func (f *fixture) request(method, path, remote string, out any) int {
	f.t.Helper()
	r := httptest.NewRequest(method, path, nil)
	r.Host = "127.0.0.1:10550"
	r.Header.Set("Authorization", "Bearer "+nodeToken)
	r.RemoteAddr = "127.0.0.1:40000"
	if remote != "" {
		r.RemoteAddr = remote
	}
	w := httptest.NewRecorder()
	f.s.Handler().ServeHTTP(w, r)
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(path, "/healthz") {
		f.t.Errorf("%s %s: content type %q", method, path, ct)
	}
	if out != nil {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			f.t.Fatalf("%s %s: %v: %s", method, path, err, w.Body)
		}
	}
	return w.Code
}

func (f *fixture) get(path string, out any) int { return f.request(http.MethodGet, path, "", out) }

func names(l *corev1.PodList) string {
	var s []string
	for _, p := range l.Items {
		s = append(s, p.Namespace+"/"+p.Name)
	}
	return strings.Join(s, " ")
}

func TestDiscovery(t *testing.T) {
	f := newFixture(t, Config{})
	var versions metav1.APIVersions
	if code := f.get("/api", &versions); code != 200 || len(versions.Versions) != 1 || versions.Versions[0] != "v1" {
		t.Fatalf("/api: %d %+v", code, versions)
	}
	var rl metav1.APIResourceList
	if code := f.get("/api/v1", &rl); code != 200 || rl.GroupVersion != "v1" {
		t.Fatalf("/api/v1: %d %+v", code, rl)
	}
	got := map[string]metav1.APIResource{}
	for _, r := range rl.APIResources {
		got[r.Name] = r
	}
	for name, namespaced := range map[string]bool{"pods": true, "configmaps": true, "secrets": true, "services": true, "nodes": false} {
		r, ok := got[name]
		if !ok || r.Namespaced != namespaced || strings.Join(r.Verbs, ",") != "get,list,watch" {
			t.Errorf("%s: %+v", name, r)
		}
	}
	var groups metav1.APIGroupList
	if code := f.get("/apis", &groups); code != 200 || len(groups.Groups) != 2 || groups.Groups[0].Name != "devices.tether.io" ||
		groups.Groups[0].PreferredVersion.GroupVersion != "devices.tether.io/v1beta1" ||
		groups.Groups[1].PreferredVersion.GroupVersion != "discovery.k8s.io/v1" {
		t.Fatalf("/apis: %d %+v", code, groups)
	}
	if code := f.get("/version", nil); code != 200 {
		t.Fatalf("/version: %d", code)
	}
	if code := f.get("/healthz", nil); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}

func TestGetListSelectors(t *testing.T) {
	f := newFixture(t, Config{})
	f.put(testPod("a", "web-1", map[string]string{"app": "web"}, corev1.PodRunning),
		testPod("a", "db-1", map[string]string{"app": "db"}, corev1.PodPending),
		testPod("b", "web-2", map[string]string{"app": "web"}, corev1.PodRunning),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "conf", UID: "uid-cm"}, Data: map[string]string{"k": "v"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "key", UID: "uid-secret"}, Data: map[string][]byte{"k": []byte("v")}})
	f.sync()

	for _, c := range []struct{ path, want string }{
		{"/api/v1/pods", "a/db-1 a/web-1 b/web-2"},
		{"/api/v1/namespaces/a/pods", "a/db-1 a/web-1"},
		{"/api/v1/pods?labelSelector=app%3Dweb", "a/web-1 b/web-2"},
		{"/api/v1/pods?labelSelector=app+in+(db)", "a/db-1"},
		{"/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.namespace%3Db", "b/web-2"},
		{"/api/v1/pods?fieldSelector=spec.nodeName%3D" + node, "a/db-1 a/web-1 b/web-2"},
		{"/api/v1/pods?fieldSelector=metadata.name%21%3Dweb-1", "a/db-1 b/web-2"},
		{"/api/v1/namespaces/c/pods", ""},
		{"/api/v1/pods?limit=1", "a/db-1 a/web-1 b/web-2"},
	} {
		var l corev1.PodList
		if code := f.get(c.path, &l); code != 200 || names(&l) != c.want {
			t.Errorf("%s: %d %q, want %q", c.path, code, names(&l), c.want)
		}
		if l.Kind != "PodList" || l.ResourceVersion == "" {
			t.Errorf("%s: kind %q, resourceVersion %q", c.path, l.Kind, l.ResourceVersion)
		}
	}

	var p corev1.Pod
	if code := f.get("/api/v1/namespaces/a/pods/web-1", &p); code != 200 || p.Name != "web-1" || p.Kind != "Pod" ||
		p.APIVersion != "v1" || p.Labels["app"] != "web" || p.ResourceVersion == "" {
		t.Fatalf("get pod: %d %+v", code, p)
	}
	if code := f.get("/api/v1/namespaces/a/pods/web-1/status", &p); code != 200 || p.Name != "web-1" {
		t.Fatalf("get pod status: %d", code)
	}
	var cm corev1.ConfigMap
	if code := f.get("/api/v1/namespaces/a/configmaps/conf", &cm); code != 200 || cm.Data["k"] != "v" {
		t.Fatalf("get configmap: %d %+v", code, cm)
	}
	var sec corev1.Secret
	if code := f.get("/api/v1/namespaces/a/secrets/key", &sec); code != 200 || string(sec.Data["k"]) != "v" {
		t.Fatalf("get secret: %d %+v", code, sec)
	}
	var st metav1.Status
	if code := f.request(http.MethodGet, "/api/v1/namespaces/a/secrets/key", "192.0.2.7:40000", &st); code != 403 || st.Reason != metav1.StatusReasonForbidden {
		t.Fatalf("secret to a remote client: %d %+v", code, st)
	}
	var n corev1.Node
	if code := f.get("/api/v1/nodes/"+node, &n); code != 200 || n.Labels[EdgeRoleLabel] != "" || n.Labels["tether.io/site"] != "store-1" ||
		n.Labels[corev1.LabelHostname] != node || n.Labels[corev1.LabelArchStable] != "arm64" || n.UID == "" {
		t.Fatalf("get node: %d %+v", code, n.ObjectMeta)
	}
	var nl corev1.NodeList
	if code := f.get("/api/v1/nodes?fieldSelector=metadata.name%3D"+node, &nl); code != 200 || len(nl.Items) != 1 {
		t.Fatalf("list nodes: %d %+v", code, nl)
	}
	var sl corev1.ServiceList
	if code := f.get("/api/v1/services", &sl); code != 200 || len(sl.Items) != 0 || sl.Kind != "ServiceList" {
		t.Fatalf("list services: %d %+v", code, sl)
	}

	// Services and EndpointSlices come from the store.
	f.put(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web", UID: "uid-svc"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Type: corev1.ServiceTypeClusterIP}},
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web-x", UID: "uid-es",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}}}})
	f.sync()
	if code := f.get("/api/v1/namespaces/a/services?fieldSelector=spec.clusterIP%3D10.96.0.10", &sl); code != 200 ||
		len(sl.Items) != 1 || sl.Items[0].Name != "web" {
		t.Fatalf("list services: %d %+v", code, sl)
	}
	var el discoveryv1.EndpointSliceList
	if code := f.get("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dweb", &el); code != 200 ||
		len(el.Items) != 1 || el.Items[0].Endpoints[0].Addresses[0] != "10.244.0.5" || el.Kind != "EndpointSliceList" {
		t.Fatalf("list endpointslices: %d %+v", code, el)
	}

	for _, c := range []struct {
		method, path string
		code         int
		reason       metav1.StatusReason
	}{
		{"GET", "/api/v1/namespaces/a/pods/nope", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v1/nodes/other-node", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v1/pods/web-1", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v1/namespaces/a/nodes", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v1/deployments", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v1/namespaces/a/pods/web-1/log", 404, metav1.StatusReasonNotFound},
		{"GET", "/apis/apps/v1", 404, metav1.StatusReasonNotFound},
		{"GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx", 400, metav1.StatusReasonBadRequest},
		{"GET", "/api/v1/configmaps?fieldSelector=status.phase%3DRunning", 400, metav1.StatusReasonBadRequest},
		{"GET", "/api/v1/pods?labelSelector=%3D%3D%3D", 400, metav1.StatusReasonBadRequest},
		{"GET", "/api/v1/pods?resourceVersion=1&resourceVersionMatch=Exact", 410, metav1.StatusReasonExpired},
		{"POST", "/api/v1/namespaces/a/pods", 405, metav1.StatusReasonMethodNotAllowed},
		{"PUT", "/api/v1/namespaces/a/pods/web-1", 405, metav1.StatusReasonMethodNotAllowed},
		{"PATCH", "/api/v1/namespaces/a/pods/web-1", 405, metav1.StatusReasonMethodNotAllowed},
		{"DELETE", "/api/v1/namespaces/a/pods/web-1", 405, metav1.StatusReasonMethodNotAllowed},
	} {
		var st metav1.Status
		if code := f.request(c.method, c.path, "", &st); code != c.code || st.Reason != c.reason || st.Kind != "Status" || int(st.Code) != c.code {
			t.Errorf("%s %s: %d %+v, want %d %s", c.method, c.path, code, st, c.code, c.reason)
		}
	}
}

// watchEvent is a decoded watch event.
type watchEvent struct {
	Type   string
	Pod    corev1.Pod
	Status metav1.Status
}

// openWatch opens a watch on srv and returns a function reading its next event.
func openWatch(t *testing.T, srv *httptest.Server, path string) func() watchEvent {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("watch %s: %d %s", path, resp.StatusCode, b)
	}
	dec := json.NewDecoder(resp.Body)
	return func() watchEvent {
		t.Helper()
		var ev metav1.WatchEvent
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("watch %s: %v", path, err)
		}
		out := watchEvent{Type: ev.Type}
		target := any(&out.Pod)
		if ev.Type == "ERROR" {
			target = &out.Status
		}
		if err := json.Unmarshal(ev.Object.Raw, target); err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func TestWatchResumesAndExpires(t *testing.T) {
	f := newFixture(t, Config{History: 4, BookmarkInterval: 20 * time.Millisecond})
	web := testPod("a", "web", map[string]string{"app": "web"}, corev1.PodPending)
	f.put(web)
	f.sync()
	srv := httptest.NewServer(withToken(f.s.Handler(), nodeToken))
	t.Cleanup(srv.Close) // after the watches' cleanups
	var l corev1.PodList
	f.get("/api/v1/namespaces/a/pods", &l)
	token := l.ResourceVersion

	// No version: the current state first.
	all := openWatch(t, srv, "/api/v1/watch/namespaces/a/pods")
	if ev := all(); ev.Type != "ADDED" || ev.Pod.Name != "web" || ev.Pod.Kind != "Pod" || ev.Pod.ResourceVersion != l.Items[0].ResourceVersion {
		t.Fatalf("first event: %+v", ev)
	}
	fromList := openWatch(t, srv, "/api/v1/namespaces/a/pods?watch=true&resourceVersion="+token)
	onlyWeb := openWatch(t, srv, "/api/v1/pods?watch=1&resourceVersion="+token+"&labelSelector=app%3Dweb")

	web.Status.Phase = corev1.PodRunning
	db := testPod("a", "db", map[string]string{"app": "db"}, corev1.PodRunning)
	f.put(web, db)
	f.sync()
	f.del(protocol.KindPod, db.UID)
	f.sync()
	web.Labels["app"] = "old-web" // stops matching app=web
	f.put(web)
	f.sync()

	var seen []string
	var last string
	for range 4 {
		ev := fromList()
		seen = append(seen, ev.Type+" "+ev.Pod.Name+" "+string(ev.Pod.Status.Phase))
		if ev.Pod.ResourceVersion <= last || ev.Pod.Kind != "Pod" {
			t.Errorf("event %+v: version not after %s", ev, last)
		}
		last = ev.Pod.ResourceVersion
	}
	if got, want := strings.Join(seen, ", "), "ADDED db Running, MODIFIED web Running, DELETED db Running, MODIFIED web Running"; got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	seen = nil
	for range 2 {
		ev := onlyWeb()
		seen = append(seen, ev.Type+" "+ev.Pod.Name+" "+ev.Pod.Labels["app"])
	}
	if got, want := strings.Join(seen, ", "), "MODIFIED web web, DELETED web web"; got != want {
		t.Fatalf("selector events:\n got %s\nwant %s", got, want)
	}
	if ev := all(); ev.Type != "ADDED" || ev.Pod.Name != "db" {
		t.Fatalf("watch without version: %+v", ev)
	}

	// Resume from the version of an event in the ring.
	resumed := openWatch(t, srv, "/api/v1/namespaces/a/pods?watch=true&resourceVersion="+last)
	f.put(db)
	f.sync()
	if ev := resumed(); ev.Type != "ADDED" || ev.Pod.Name != "db" {
		t.Fatalf("resumed: %+v", ev)
	}
	// The ring holds 4 events; the list's version is now too old.
	expired := openWatch(t, srv, "/api/v1/namespaces/a/pods?watch=true&resourceVersion="+token)
	if ev := expired(); ev.Type != "ERROR" || ev.Status.Code != 410 || ev.Status.Reason != metav1.StatusReasonExpired {
		t.Fatalf("watch from an expired version: %+v", ev)
	}
	// Bookmarks carry the latest version.
	bm := openWatch(t, srv, "/api/v1/namespaces/a/pods?watch=true&allowWatchBookmarks=true&resourceVersion="+last)
	if ev := bm(); ev.Type != "ADDED" {
		t.Fatalf("resumed: %+v", ev)
	}
	if ev := bm(); ev.Type != "BOOKMARK" || ev.Pod.ResourceVersion != strconv.FormatUint(f.s.cache.version(), 10) {
		t.Fatalf("bookmark: %+v", ev)
	}
	// A watch through a name.
	one := openWatch(t, srv, "/api/v1/watch/namespaces/a/pods/db")
	if ev := one(); ev.Type != "ADDED" || ev.Pod.Name != "db" {
		t.Fatalf("named watch: %+v", ev)
	}
	// Initial events end with a marked bookmark.
	initial := openWatch(t, srv, "/api/v1/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")
	for range 2 {
		if ev := initial(); ev.Type != "ADDED" {
			t.Fatalf("initial: %+v", ev)
		}
	}
	if ev := initial(); ev.Type != "BOOKMARK" || ev.Pod.Annotations[metav1.InitialEventsAnnotationKey] != "true" {
		t.Fatalf("initial events end: %+v", ev)
	}
}

// A restart takes new versions: a version of the previous run is too old.
func TestVersionsOfAnotherRunExpire(t *testing.T) {
	f := newFixture(t, Config{})
	f.put(testPod("a", "web", nil, corev1.PodRunning))
	f.sync()
	var before corev1.PodList
	f.get("/api/v1/pods", &before)
	f.s = f.newServer(Config{})
	var after corev1.PodList
	f.get("/api/v1/pods", &after)
	b, _ := strconv.ParseUint(before.ResourceVersion, 10, 64)
	a, _ := strconv.ParseUint(after.ResourceVersion, 10, 64)
	if a <= b || len(after.Items) != 1 {
		t.Fatalf("versions %d then %d, %d pods", b, a, len(after.Items))
	}
	srv := httptest.NewServer(withToken(f.s.Handler(), nodeToken))
	t.Cleanup(srv.Close) // after the watches' cleanups
	if ev := openWatch(t, srv, "/api/v1/pods?watch=true&resourceVersion="+before.ResourceVersion)(); ev.Type != "ERROR" || ev.Status.Code != 410 {
		t.Fatalf("watch from the previous run: %+v", ev)
	}
}

func TestConfigRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:10550", ":10550", "192.0.2.1:10550", "example.com:1", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:70000"} {
		if err := ValidateAddr(addr); err == nil {
			t.Errorf("%s accepted", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:10550", "[::1]:0", "localhost:10550", "127.0.0.2:1"} {
		if err := ValidateAddr(addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

// start runs the Server on a free loopback port and returns a clientset
// for it.
func (f *fixture) start(ctx context.Context) kubernetes.Interface {
	f.t.Helper()
	done := make(chan error, 1)
	go func() { done <- f.s.Start(ctx) }()
	f.t.Cleanup(func() {
		if err := <-done; err != nil {
			f.t.Errorf("Start: %v", err)
		}
	})
	select {
	case <-f.s.Ready():
	case err := <-done:
		f.t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + f.s.Addr(), BearerToken: nodeToken})
	if err != nil {
		f.t.Fatal(err)
	}
	return cs
}

func TestClientGo(t *testing.T) {
	f := newFixture(t, Config{})
	f.put(testPod("a", "web-1", map[string]string{"app": "web"}, corev1.PodRunning),
		testPod("b", "web-2", map[string]string{"app": "web"}, corev1.PodRunning))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Objects stored before New are loaded by it.
	f.s = f.newServer(Config{})
	cs := f.start(ctx)

	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || names(pods) != "a/web-1 b/web-2" {
		t.Fatalf("list: %v %v", names(pods), err)
	}
	p, err := cs.CoreV1().Pods("a").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil || p.Spec.NodeName != node {
		t.Fatalf("get: %+v %v", p, err)
	}
	if _, err := cs.CoreV1().Pods("a").Get(ctx, "nope", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get missing: %v", err)
	}
	if n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err != nil || n.Status.NodeInfo.Architecture != "arm64" {
		t.Fatalf("get node: %+v %v", n, err)
	}
	if _, err := cs.CoreV1().Pods("a").Create(ctx, testPod("a", "x", nil, ""), metav1.CreateOptions{}); !apierrors.IsMethodNotSupported(err) {
		t.Fatalf("create: %v", err)
	}
	if err := cs.CoreV1().Pods("a").Delete(ctx, "web-1", metav1.DeleteOptions{}); !apierrors.IsMethodNotSupported(err) {
		t.Fatalf("delete: %v", err)
	}
	if _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.bogus=1"}); !apierrors.IsBadRequest(err) {
		t.Fatalf("bad field selector: %v", err)
	}
	if v, err := cs.Discovery().ServerVersion(); err != nil || v.GitVersion == "" {
		t.Fatalf("version: %+v %v", v, err)
	}
	if rl, err := cs.Discovery().ServerResourcesForGroupVersion("v1"); err != nil || len(rl.APIResources) < 5 {
		t.Fatalf("discovery: %+v %v", rl, err)
	}

	// An informer syncs, then follows adds, updates and deletes.
	events := make(chan string, 100)
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { events <- "add " + o.(*corev1.Pod).Name },
		UpdateFunc: func(old, o any) {
			if old.(*corev1.Pod).ResourceVersion != o.(*corev1.Pod).ResourceVersion {
				events <- "update " + o.(*corev1.Pod).Name + " " + string(o.(*corev1.Pod).Status.Phase)
			}
		},
		DeleteFunc: func(o any) {
			if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			events <- "delete " + o.(*corev1.Pod).Name
		},
	})
	factory.Start(ctx.Done())
	defer func() { cancel(); factory.Shutdown() }()
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	expect := func(want ...string) {
		t.Helper()
		got := map[string]bool{}
		timeout := time.After(10 * time.Second)
		for len(got) < len(want) {
			select {
			case e := <-events:
				got[e] = true
			case <-timeout:
				t.Fatalf("informer events %v, want %v", got, want)
			}
		}
		for _, w := range want {
			if !got[w] {
				t.Fatalf("informer events %v, want %v", got, want)
			}
		}
	}
	expect("add web-1", "add web-2")

	p3 := testPod("a", "web-3", nil, corev1.PodPending)
	f.put(p3)
	f.s.ObjectsChanged(map[protocol.Kind]bool{protocol.KindPod: true}, nil)
	expect("add web-3")
	p3.Status.Phase = corev1.PodRunning
	f.put(p3)
	f.s.ObjectsChanged(map[protocol.Kind]bool{protocol.KindPod: true}, nil)
	expect("update web-3 Running")
	f.del(protocol.KindPod, "uid-a-web-1")
	f.s.ObjectsChanged(map[protocol.Kind]bool{protocol.KindPod: true}, nil)
	expect("delete web-1")
	if got := len(inf.GetStore().List()); got != 2 {
		t.Fatalf("informer holds %d pods, want 2", got)
	}

	// A reflector that fell out of the ring lists again and catches up.
	w, err := cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: "1"})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-w.ResultChan()
	w.Stop()
	if st, ok := ev.Object.(*metav1.Status); ev.Type != "ERROR" || !ok || st.Code != 410 {
		t.Fatalf("watch from version 1: %+v", ev)
	}
	var se *apierrors.StatusError
	if !errors.As(apierrors.FromObject(ev.Object), &se) || !apierrors.IsResourceExpired(se) {
		t.Fatalf("not an expired error: %+v", ev.Object)
	}
}

// A port held by another process does not stop the Server: it listens once
// the port is free.
func TestStartWaitsForTheAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Addr: ln.Addr().String()})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.s.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	if f.s.Addr() != "" {
		t.Fatal("listening on a port in use")
	}
	ln.Close()
	select {
	case <-f.s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("not listening after the port was freed")
	}
	resp, err := http.Get("http://" + f.s.Addr() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
}

// The tokens of the tests' clients.
const (
	nodeToken    = "node-token-0123456789abcdef0123456789"
	devicesToken = "devices-token-0123456789abcdef012345"
)

var testClients = []Client{{Name: NodeClient, Token: nodeToken},
	{Name: DevicesClient, Token: devicesToken, Resources: DevicesResources}}

// withToken sends every request to h with the bearer token tok, as a
// client-go configured with it does.
func withToken(h http.Handler, tok string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(w, r)
	})
}

// TestEpochFileUnusable: an empty, torn or corrupt count of starts (a power
// loss, a bad disk) does not stop the Server: it takes a random epoch above
// the counted ones, saves it, and versions of the earlier run still expire.
func TestEpochFileUnusable(t *testing.T) {
	for name, content := range map[string]string{
		"empty":    "",
		"torn":     "\x00\x00\x00",
		"garbage":  "seven\n",
		"overflow": "99999999999999999999\n",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Config{})
			var before corev1.PodList
			f.get("/api/v1/pods", &before)
			path := filepath.Join(f.stateDir, epochFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			f.s = f.newServer(Config{}) // fails the test if New fails
			var after corev1.PodList
			f.get("/api/v1/pods", &after)
			b, _ := strconv.ParseUint(before.ResourceVersion, 10, 64)
			a, _ := strconv.ParseUint(after.ResourceVersion, 10, 64)
			if a < maxEpoch/2*epochSpan || a <= b {
				t.Fatalf("version %d after %d, want a fallback epoch", a, b)
			}
			saved, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(saved)); got != strconv.FormatUint(a/epochSpan, 10) {
				t.Fatalf("saved count %q, want the epoch used, %d", got, a/epochSpan)
			}
			// The next start counts on from the fallback.
			f.s = f.newServer(Config{})
			var next corev1.PodList
			f.get("/api/v1/pods", &next)
			if n, _ := strconv.ParseUint(next.ResourceVersion, 10, 64); n/epochSpan != a/epochSpan+1 {
				t.Fatalf("next start at version %d, want epoch %d", n, a/epochSpan+1)
			}
		})
	}
}

// TestEpochNotSaved: when the count cannot be saved (here the state
// directory cannot be made; a full disk is tested in package edgecore),
// the Server starts with a random epoch rather than the counted one, which
// the next start would count again.
func TestEpochNotSaved(t *testing.T) {
	f := newFixture(t, Config{})
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f.stateDir = filepath.Join(file, "state") // below a regular file: cannot be made
	f.s = f.newServer(Config{})
	var l corev1.PodList
	f.get("/api/v1/pods", &l)
	if v, _ := strconv.ParseUint(l.ResourceVersion, 10, 64); v < maxEpoch/2*epochSpan {
		t.Fatalf("version %d, want a fallback epoch", v)
	}
}

// TestEpochCounts: the count of starts is saved with no temporary file
// left behind.
func TestEpochCounts(t *testing.T) {
	dir := t.TempDir()
	for want := uint64(1); want <= 3; want++ {
		got, warn := nextEpoch(dir)
		if got != want || warn != nil {
			t.Fatalf("epoch %d (%v), want %d", got, warn, want)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != epochFile {
		t.Fatalf("state dir holds %v", entries)
	}
}

// reported is a PodStatuses for tests.
type reported struct {
	mu      sync.Mutex
	m       map[string][]byte
	changed chan struct{}
}

func (r *reported) PodStatus(uid string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.m[uid]
	return s, ok
}

func (r *reported) Changed() <-chan struct{} { return r.changed }

func (r *reported) set(t *testing.T, uid types.UID, st *corev1.PodStatus) {
	t.Helper()
	r.mu.Lock()
	if st == nil {
		delete(r.m, string(uid))
	} else {
		b, err := protocol.EncodePodStatus(st)
		if err != nil {
			t.Fatal(err)
		}
		r.m[string(uid)] = b
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// TestPodsServedWithReportedStatus checks that pods are served with the
// status the node last reported, not the one stored with the pod (the cloud
// does not send a pod down again for a status write), and that a new report
// reaches watchers as a MODIFIED event.
func TestPodsServedWithReportedStatus(t *testing.T) {
	rep := &reported{m: map[string][]byte{}, changed: make(chan struct{}, 1)}
	f := newFixture(t, Config{PodStatuses: rep})
	web := testPod("a", "web", nil, corev1.PodPending)
	f.put(web)
	f.sync()
	cs := f.start(t.Context())
	pods := cs.CoreV1().Pods("a")

	p, err := pods.Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodPending {
		t.Fatalf("before any report: phase %s, want the stored Pending", p.Status.Phase)
	}
	w, err := pods.Watch(t.Context(), metav1.ListOptions{ResourceVersion: p.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func(want corev1.PodPhase, ip string) {
		t.Helper()
		select {
		case ev := <-w.ResultChan():
			got := ev.Object.(*corev1.Pod)
			if ev.Type != "MODIFIED" || got.Status.Phase != want || got.Status.PodIP != ip || got.Spec.NodeName != node {
				t.Fatalf("event %s %s %q, want MODIFIED %s %q", ev.Type, got.Status.Phase, got.Status.PodIP, want, ip)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for %s", want)
		}
	}
	rep.set(t, web.UID, &corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.88.0.7"})
	next(corev1.PodRunning, "10.88.0.7")
	p, err = pods.Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP != "10.88.0.7" {
		t.Fatalf("get: %s %q, want the reported Running 10.88.0.7", p.Status.Phase, p.Status.PodIP)
	}
	if l, err := pods.List(t.Context(), metav1.ListOptions{FieldSelector: "status.phase=Running"}); err != nil || len(l.Items) != 1 {
		t.Fatalf("field selector on the reported phase: %v %v", l, err)
	}
	rep.set(t, web.UID, &corev1.PodStatus{Phase: corev1.PodSucceeded, PodIP: "10.88.0.7"})
	next(corev1.PodSucceeded, "10.88.0.7")
	// The pod changes in the store (a new spec from the cloud): still
	// served with the reported status.
	web.Labels = map[string]string{"v": "2"}
	f.put(web)
	f.s.ObjectsChanged(nil, nil)
	next(corev1.PodSucceeded, "10.88.0.7")
	// A report no longer held: the stored status again.
	rep.set(t, web.UID, nil)
	next(corev1.PodPending, "")
}

// /readyz answers Ready: ok while the store is open, 503 "not ready" (no
// detail: it is public) once it is closed; /healthz stays ok.
func TestReadyz(t *testing.T) {
	var f *fixture
	f = newFixture(t, Config{Ready: func() error { return f.db.View(func(*store.Tx) error { return nil }) }})
	get := func(path string) (int, string) {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Host, r.RemoteAddr = "127.0.0.1:10550", "127.0.0.1:40000" // no token: public
		w := httptest.NewRecorder()
		f.s.Handler().ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	if code, body := get("/readyz"); code != 200 || body != "ok" {
		t.Fatalf("/readyz with the store open: %d %q", code, body)
	}
	f.db.Close()
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != "not ready" {
		t.Fatalf("/readyz with the store closed: %d %q", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}
