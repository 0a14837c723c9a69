package metaserver

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

// fuzzSecret is the value of the one secret of FuzzHandler's store.
const fuzzSecret = "s3cr3t-value-of-the-fuzz-secret"

// FuzzParse checks the parser of resource paths and their selectors: an
// accepted request names a resource of its group version with names that
// are one path segment each, selects only fields the resource has, and its
// selectors print to strings that parse again to the same selectors.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"/api/v1/pods", "/api/v1/namespaces/a/pods", "/api/v1/pods?labelSelector=app%3Dweb",
		"/api/v1/pods?labelSelector=app+in+(db,web),tier!%3Dfront,!canary",
		"/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.namespace%3Db",
		"/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1&watch=true&resourceVersion=5",
		"/api/v1/watch/namespaces/a/pods/web-1", "/api/v1/namespaces/a/pods/web-1/status",
		"/api/v1/nodes/edge-1", "/api/v1/namespaces/a/secrets/key", "/api/v1/pods?continue=x",
		"/apis/devices.tether.io/v1beta1/namespaces/plant/devices/thermo",
		"/apis/devices.tether.io/v1beta1/devicemodels?fieldSelector=metadata.name%3Dm",
		"/api/v1/pods?labelSelector=%3D%3D%3D", "/api/v1/namespaces//pods",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		r, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:10550"+target, nil)
		if err != nil {
			return
		}
		for _, g := range groupVersions {
			if !strings.HasPrefix(r.URL.Path, g.prefix) {
				continue
			}
			req, serr := parse(r, g)
			if serr != nil {
				if c := serr.ErrStatus.Code; c != http.StatusNotFound && c != http.StatusBadRequest && c != http.StatusMethodNotAllowed {
					t.Fatalf("%s: status %d", target, c)
				}
				continue
			}
			if req.res == nil || req.res.gv != g.gv || resources[req.res.name] != req.res {
				t.Fatalf("%s: resource %+v in %v", target, req.res, g.gv)
			}
			for _, s := range []string{req.namespace, req.name} {
				if strings.Contains(s, "/") {
					t.Fatalf("%s: namespace %q, name %q", target, req.namespace, req.name)
				}
			}
			if !req.res.namespaced && req.namespace != "" || req.res.namespaced && req.name != "" && req.namespace == "" {
				t.Fatalf("%s: %s namespace %q name %q", target, req.res.name, req.namespace, req.name)
			}
			for _, rq := range req.fields.Requirements() {
				if rq.Field != "metadata.name" && !slices.Contains(req.res.fieldNames, rq.Field) {
					t.Fatalf("%s: selects field %q", target, rq.Field)
				}
			}
			ls, err := labels.Parse(req.labels.String())
			if err != nil || ls.String() != req.labels.String() {
				t.Fatalf("%s: label selector %q parses again to %v, %v", target, req.labels, ls, err)
			}
			// (Compared by requirements: AndSelectors with Everything
			// prints a leading comma, which parses the same.)
			fs, err := fields.ParseSelector(req.fields.String())
			if err != nil || !reflect.DeepEqual(fs.Requirements(), req.fields.Requirements()) {
				t.Fatalf("%s: field selector %q parses again to %v, %v", target, req.fields, fs, err)
			}
		}
	})
}

// FuzzHandler sends hostile GET requests to the whole handler over a store
// with pods, a configmap and a secret. Every answer is JSON (a Status when
// it is not a 200), nothing but the health checks answers without a
// Content-Type, and no URL gets the secret to a client off loopback.
func FuzzHandler(f *testing.F) {
	fx := newFixture(f, Config{})
	fx.put(testPod("a", "web-1", map[string]string{"app": "web"}, corev1.PodRunning),
		testPod("b", "db-1", map[string]string{"app": "db"}, corev1.PodPending),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "conf", UID: "uid-cm"}, Data: map[string]string{"k": "v"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "key", UID: "uid-secret"},
			Data: map[string][]byte{"k": []byte(fuzzSecret)}})
	fx.sync()
	h := fx.s.Handler()
	for _, s := range []string{
		"/api", "/apis", "/api/v1", "/version", "/healthz", "/api/v1/pods?labelSelector=app%3Dweb",
		"/api/v1/namespaces/a/secrets/key", "/api/v1/secrets", "/api/v1/watch/secrets?timeoutSeconds=1",
		"/api/v1/namespaces/a/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=true",
		"/api/v1/pods?resourceVersion=1&resourceVersionMatch=Exact", "/api/v1/namespaces/a/configmaps/conf",
		"/apis/devices.tether.io/v1beta1/devices", "/api/v1/namespaces/a/../a/secrets/key",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	// Watches stream until their request ends: the requests are cancelled
	// from the start, so a watch writes its initial events and returns.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, target string, remote bool) {
		r, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:10550"+target, nil)
		if err != nil {
			return
		}
		r.RemoteAddr = "127.0.0.1:40000"
		if remote {
			r.RemoteAddr = "192.0.2.7:40000"
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		body := w.Body.String()
		if remote && strings.Contains(body, fuzzSecret) {
			t.Fatalf("%s: the secret served to a remote client: %d %s", target, w.Code, body)
		}
		ct := w.Header().Get("Content-Type")
		switch {
		case w.Code == http.StatusMovedPermanently || w.Code == http.StatusTemporaryRedirect:
			return // the mux cleaning a path
		case strings.HasPrefix(ct, "text/plain"):
			if w.Code != http.StatusOK || body != "ok" {
				t.Fatalf("%s: %d %q %q", target, w.Code, ct, body)
			}
			return
		case !strings.HasPrefix(ct, "application/json"):
			t.Fatalf("%s: %d, content type %q", target, w.Code, ct)
		}
		if w.Code == http.StatusOK {
			dec := json.NewDecoder(strings.NewReader(body))
			for dec.More() {
				var v json.RawMessage
				if err := dec.Decode(&v); err != nil {
					t.Fatalf("%s: %v: %s", target, err, body)
				}
			}
			return
		}
		var st metav1.Status
		if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil || st.Kind != "Status" || int(st.Code) != w.Code {
			t.Fatalf("%s: %d %s (%v)", target, w.Code, body, err)
		}
	})
}
