package kubeletserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

type onePod struct{ p *corev1.Pod }

func (o onePod) Pod(ns, name string) (*corev1.Pod, error) {
	if ns == o.p.Namespace && name == o.p.Name {
		return o.p, nil
	}
	return nil, nil
}

func (o onePod) List() ([]*corev1.Pod, error) { return []*corev1.Pod{o.p}, nil }

type fileRuntime struct{ path string }

func (f fileRuntime) ContainerLog(_ context.Context, _ types.UID, _ string, previous bool) (string, string, error) {
	if previous {
		return "", "", errors.New("previous terminated container main: not found")
	}
	return f.path, "id", nil
}
func (fileRuntime) ContainerRunning(context.Context, string) (bool, error) { return false, nil }
func (fileRuntime) ExecURL(context.Context, types.UID, string, []string, bool, bool, bool, bool) (string, error) {
	return "http://192.0.2.1:1/exec/x", nil // not loopback: refused
}
func (fileRuntime) AttachURL(context.Context, types.UID, string, bool, bool, bool, bool) (string, error) {
	return "", errors.New("no")
}
func (fileRuntime) PortForwardURL(context.Context, types.UID, []int32) (string, error) {
	return "", errors.New("no")
}

func TestServerAnswersBadRequestsClearly(t *testing.T) {
	log := filepath.Join(t.TempDir(), "0.log")
	os.WriteFile(log, []byte("2026-12-06T10:00:00Z stdout F hi\n"), 0o644)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}},
			EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger"}}}}}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(Config{NodeName: "n", Pods: onePod{pod}, Runtime: fileRuntime{log}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := New(Config{NodeName: "n", Pods: onePod{pod}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		srv    *Server
		method string
		path   string
		code   int
		body   string
	}{
		{s, "GET", "/healthz", 200, "ok"},
		{s, "GET", "/containerLogs/ns/p/main", 200, "hi\n"},
		{s, "GET", "/containerLogs/ns/other/main", 404, "pod ns/other not found on node n"},
		{s, "GET", "/containerLogs/ns/p/nope", 404, "container nope is not valid for pod p"},
		{s, "GET", "/containerLogs/ns/p/debugger", 200, "hi\n"}, // an ephemeral container, as kubectl debug reads it
		{s, "POST", "/exec/ns/p/debugger?command=ls", 500, "not on loopback"},
		{s, "GET", "/containerLogs/ns/p/main?tailLines=-3", 400, "tailLines"},
		{s, "GET", "/containerLogs/ns/p/main?previous=true", 404, "previous terminated container"},
		{s, "POST", "/exec/ns/p/main", 400, "no command given"},
		{s, "POST", "/exec/ns/p/u2/main?command=ls", 404, "has UID u1, not u2"},
		{s, "POST", "/exec/ns/p/main?command=ls", 500, "not on loopback"},
		{s, "POST", "/portForward/ns/p?port=70000", 400, "want 1 to 65535"},
		{s, "GET", "/stats/summary", 404, ""},
		{s, "GET", "/pods", 200, `"name":"p"`},
		{bare, "GET", "/containerLogs/ns/p/main", 501, "does not serve logs"},
		{s, "DELETE", "/containerLogs/ns/p/main", 405, ""},
	} {
		w := httptest.NewRecorder()
		c.srv.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if w.Code != c.code || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, w.Code, w.Body.String(), c.code, c.body)
		}
	}
	// The stats handler, when given, serves its paths.
	st, _ := New(Config{NodeName: "n", Pods: onePod{pod}, Logger: quiet,
		Stats: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "stats "+r.URL.Path) })})
	for _, p := range []string{"/stats/summary", "/metrics/resource"} {
		w := httptest.NewRecorder()
		st.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		if w.Code != 200 || w.Body.String() != "stats "+p {
			t.Errorf("stats handler at %s: %d %q", p, w.Code, w.Body.String())
		}
	}
}
