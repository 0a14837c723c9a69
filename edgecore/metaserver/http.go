package metaserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/protocol"
)

// Handler returns the Server's HTTP handler for its loopback listener.
func (s *Server) Handler() http.Handler { return s.handler(s.guard) }

// handler is the HTTP handler with guard authenticating the callers: the
// loopback clients' (guard) or the pods' (podGuard).
func (s *Server) handler(guard func(func(http.ResponseWriter, *http.Request, *Client)) http.HandlerFunc) http.Handler {
	readOnlyAs := func(h func(w http.ResponseWriter, r *http.Request, c *Client)) http.HandlerFunc {
		return guard(func(w http.ResponseWriter, r *http.Request, c *Client) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				s.refuseWrite(w, r, c)
				return
			}
			h(w, r, c)
		})
	}
	readOnly := func(h http.HandlerFunc) http.HandlerFunc {
		return readOnlyAs(func(w http.ResponseWriter, r *http.Request, _ *Client) { h(w, r) })
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api", readOnly(s.serveAPIVersions))
	mux.HandleFunc("/apis", readOnly(func(w http.ResponseWriter, r *http.Request) {
		l := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}}
		for _, g := range groupVersions {
			if g.gv.Group != "" {
				l.Groups = append(l.Groups, apiGroup(g))
			}
		}
		writeJSON(w, http.StatusOK, l)
	}))
	for _, g := range groupVersions {
		path := strings.TrimSuffix(g.prefix, "/")
		if g.gv.Group != "" {
			mux.HandleFunc("/apis/"+g.gv.Group, readOnly(func(w http.ResponseWriter, r *http.Request) {
				ag := apiGroup(g)
				ag.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
				writeJSON(w, http.StatusOK, &ag)
			}))
		}
		mux.HandleFunc(path, readOnlyAs(func(w http.ResponseWriter, r *http.Request, c *Client) {
			s.serveResourceList(w, g, c.pod != nil && s.cfg.InCluster.Writes != nil)
		}))
		mux.HandleFunc(g.prefix, readOnlyAs(func(w http.ResponseWriter, r *http.Request, c *Client) {
			s.serveResource(w, r, g, c)
		}))
	}
	mux.HandleFunc("/version", readOnly(func(w http.ResponseWriter, r *http.Request) {
		v := strings.TrimPrefix(nodestatus.KubeletVersion, "v")
		major, minor, _ := strings.Cut(v, ".")
		minor, _, _ = strings.Cut(minor, ".")
		writeJSON(w, http.StatusOK, &version.Info{Major: major, Minor: minor, GitVersion: nodestatus.KubeletVersion,
			Platform: "tether-metaserver"})
	}))
	if s.cfg.Metrics != nil {
		mux.HandleFunc("/metrics", readOnlyAs(func(w http.ResponseWriter, r *http.Request, c *Client) {
			if !c.may(MetricsResource) {
				s.forbidden(w, c, MetricsResource)
				return
			}
			s.cfg.Metrics.ServeHTTP(w, r)
		}))
	}
	for _, p := range []string{"/healthz", "/livez", "/readyz"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if p == "/readyz" && s.cfg.Ready != nil {
				if err := s.cfg.Ready(); err != nil {
					w.WriteHeader(http.StatusServiceUnavailable)
					w.Write([]byte("not ready"))
					return
				}
			}
			w.Write([]byte("ok"))
		})
	}
	mux.HandleFunc("/", guard(func(w http.ResponseWriter, r *http.Request, c *Client) {
		if c.pod != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
			// A pod's write of a resource the metaserver does not serve
			// (leases, events, deployments...): relayed or refused as any.
			s.refuseWrite(w, r, c)
			return
		}
		writeStatus(w, notFound())
	}))
	return mux
}

// refuseWrite answers a method other than GET and HEAD: for a pod, with
// InClusterConfig.Writes, the write is relayed to the cloud (relayWrite);
// otherwise 405, or for a pod with the cloud unreachable 503 at once. No
// Retry-After: client-go would sleep it and retry up to 10 times, holding
// the caller for minutes; the caller's own logic retries.
func (s *Server) refuseWrite(w http.ResponseWriter, r *http.Request, c *Client) {
	if c.pod != nil && s.cfg.InCluster.Writes != nil {
		s.relayWrite(w, r, c)
		return
	}
	if c.pod != nil && !s.cfg.InCluster.Authorizer.Online() {
		s.writesRefused.Add(1)
		writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusServiceUnavailable, Reason: metav1.StatusReasonServiceUnavailable,
			Message: fmt.Sprintf("%s refused: the cloud is unreachable; the edge serves reads only until it is back", r.Method)}})
		return
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed, Reason: metav1.StatusReasonMethodNotAllowed,
		Message: fmt.Sprintf("%s is not allowed: the edge metaserver is read-only; write to the cloud's API server", r.Method)}})
}

// relayWrite relays a pod's write to the cloud: a create, update, patch or
// delete of a resource path of the API (protocol.ParseAPIWritePath: no
// watch, exec, attach, port-forward, proxy or log; 405 for those), with a
// body of at most protocol.MaxAPIBody (413), and writes the answer.
func (s *Server) relayWrite(w http.ResponseWriter, r *http.Request, c *Client) {
	if _, err := protocol.ParseAPIWritePath(r.Method, r.URL.Path); err != nil {
		s.refused.Add(1)
		writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{
			Status: metav1.StatusFailure, Code: http.StatusMethodNotAllowed, Reason: metav1.StatusReasonMethodNotAllowed,
			Message: fmt.Sprintf("%s %s is not relayed to the cloud by the edge: %v", r.Method, r.URL.Path, err)}})
		return
	}
	if r.ContentLength > protocol.MaxAPIBody {
		s.refused.Add(1)
		writeStatus(w, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the edge relays bodies of at most %d bytes", protocol.MaxAPIBody)))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, protocol.MaxAPIBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.refused.Add(1)
			writeStatus(w, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the edge relays bodies of at most %d bytes", protocol.MaxAPIBody)))
			return
		}
		writeStatus(w, apierrors.NewBadRequest("reading the body: "+err.Error()))
		return
	}
	res := s.cfg.InCluster.Writes.Write(r.Context(), *c.pod, &protocol.APIRequest{Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, ContentType: r.Header.Get("Content-Type"), Accept: r.Header.Get("Accept"),
		UserAgent: truncate(r.Header.Get("User-Agent"), 200), Body: body})
	if res.Status == http.StatusServiceUnavailable {
		s.writesRefused.Add(1)
	} else {
		s.writesRelayed.Add(1)
	}
	if res.ContentType != "" {
		w.Header().Set("Content-Type", res.ContentType)
	}
	for _, warning := range res.Warnings {
		w.Header().Add("Warning", warning)
	}
	w.WriteHeader(res.Status)
	w.Write(res.Body)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (s *Server) serveAPIVersions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
}

func apiGroup(g *groupVersion) metav1.APIGroup {
	v := metav1.GroupVersionForDiscovery{GroupVersion: g.gv.String(), Version: g.gv.Version}
	return metav1.APIGroup{Name: g.gv.Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v}
}

// serveResourceList answers a group version's discovery. The verbs are the
// reads it serves, and for a pod whose writes are relayed to the cloud
// (writes) the writes too: the cloud's API server then decides each one, as
// it would for the pod's service account (kubectl and other clients that
// read discovery before they write would otherwise give up).
func (s *Server) serveResourceList(w http.ResponseWriter, g *groupVersion, writes bool) {
	l := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: g.gv.String()}
	verbs, statusVerbs := metav1.Verbs{"get", "list", "watch"}, metav1.Verbs{"get"}
	if writes {
		verbs = metav1.Verbs{"create", "delete", "get", "list", "patch", "update", "watch"}
		statusVerbs = metav1.Verbs{"get", "patch", "update"}
	}
	for _, name := range g.names {
		res := resources[name]
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: res.name, SingularName: res.singular,
			Namespaced: res.namespaced, Kind: res.kind, Verbs: verbs, ShortNames: res.shortNames, Categories: res.categories})
		if res.status {
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: res.name + "/status",
				Namespaced: res.namespaced, Kind: res.kind, Verbs: statusVerbs})
		}
	}
	writeJSON(w, http.StatusOK, l)
}

// request is a parsed request for a resource.
type request struct {
	res       *resource
	namespace string // "" for all namespaces and cluster-scoped resources
	name      string
	watch     bool
	labels    labels.Selector
	fields    fields.Selector
}

// parse reads PREFIX[watch/][namespaces/NS/]RESOURCE[/NAME[/status]], where
// PREFIX is the group version's (/api/v1/, /apis/GROUP/VERSION/).
func parse(r *http.Request, g *groupVersion) (*request, *apierrors.StatusError) {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, g.prefix), "/"), "/")
	req := &request{}
	if segs[0] == "watch" {
		req.watch, segs = true, segs[1:]
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		req.namespace, segs = segs[1], segs[2:]
	}
	if len(segs) == 0 || len(segs) > 3 || len(segs) == 3 && segs[2] != "status" || slices.Contains(segs, "") {
		return nil, notFound()
	}
	req.res = resources[segs[0]]
	if req.res == nil || req.res.gv != g.gv {
		return nil, notFound()
	}
	if len(segs) > 1 {
		req.name = segs[1]
	}
	// Namespaced objects are named within a namespace, and cluster-scoped
	// ones in none.
	if req.res.namespaced && req.namespace == "" && req.name != "" || !req.res.namespaced && req.namespace != "" {
		return nil, notFound()
	}
	q := r.URL.Query()
	if v := q.Get("watch"); v != "" {
		w, err := strconv.ParseBool(v)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("watch: %q is not a boolean", v))
		}
		req.watch = req.watch || w
	}
	if req.watch && len(segs) == 3 {
		return nil, apierrors.NewMethodNotSupported(schema.GroupResource{Group: req.res.gv.Group, Resource: req.res.name + "/status"}, "watch")
	}
	var err error
	if req.labels, err = labels.Parse(q.Get("labelSelector")); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("labelSelector: %v", err))
	}
	if req.fields, err = fields.ParseSelector(q.Get("fieldSelector")); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("fieldSelector: %v", err))
	}
	for _, f := range req.fields.Requirements() {
		if !slices.Contains(req.res.fieldNames, f.Field) {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s (%s supports %s)",
				f.Field, req.res.name, strings.Join(req.res.fieldNames, ", ")))
		}
	}
	if req.name != "" && req.watch {
		req.fields = fields.AndSelectors(req.fields, fields.OneTermEqualSelector("metadata.name", req.name))
	}
	if q.Get("continue") != "" {
		return nil, apierrors.NewBadRequest("continue: the metaserver never splits lists, so it has no continue tokens")
	}
	return req, nil
}

func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, g *groupVersion, c *Client) {
	req, serr := parse(r, g)
	if serr != nil {
		writeStatus(w, serr)
		return
	}
	if c.pod != nil {
		if !s.authorizePod(w, r, c, req) {
			return
		}
	} else if !c.may(req.res.name) {
		s.forbidden(w, c, req.res.name)
		return
	} else if req.res.name == resSecrets && !fromLoopback(r) {
		writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Resource: resSecrets}, req.name,
			errors.New("secrets are served to loopback clients only")))
		return
	}
	switch {
	case req.watch:
		s.serveWatch(w, r, req)
	case req.name != "":
		s.serveGet(w, req)
	default:
		s.serveList(w, r, req)
	}
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// decode returns the object of e as served at version rv.
func (req *request) decode(data []byte, rv uint64) (object, error) {
	o, err := req.res.decode(data)
	if err != nil {
		return nil, err
	}
	o.SetResourceVersion(strconv.FormatUint(rv, 10))
	return o, nil
}

func (req *request) matches(o object) bool {
	if req.namespace != "" && o.GetNamespace() != req.namespace {
		return false
	}
	return req.labels.Matches(labels.Set(o.GetLabels())) && req.fields.Matches(req.res.fields(o))
}

func (req *request) setKind(o object) {
	o.GetObjectKind().SetGroupVersionKind(req.res.gv.WithKind(req.res.kind))
}

func (s *Server) serveGet(w http.ResponseWriter, req *request) {
	e := s.cache.get(req.res.name, req.namespace, req.name)
	if e == nil {
		writeStatus(w, apierrors.NewNotFound(schema.GroupResource{Group: req.res.gv.Group, Resource: req.res.name}, req.name))
		return
	}
	o, err := req.decode(e.data, e.rv)
	if err != nil {
		s.internalError(w, err)
		return
	}
	req.setKind(o)
	writeJSON(w, http.StatusOK, o)
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, req *request) {
	entries, rv := s.cache.list(req.res.name, req.namespace)
	q := r.URL.Query()
	if v := q.Get("resourceVersion"); v != "" {
		asked, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion: %q is not a resource version", v)))
			return
		}
		// The state served is the latest, which is not older than any
		// version; only an exact match of an older one cannot be served.
		if metav1.ResourceVersionMatch(q.Get("resourceVersionMatch")) == metav1.ResourceVersionMatchExact && asked != rv {
			writeStatus(w, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", asked, rv)))
			return
		}
	}
	items := make([]json.RawMessage, 0, len(entries))
	for _, e := range entries {
		o, err := req.decode(e.data, e.rv)
		if err != nil {
			s.internalError(w, err)
			return
		}
		if !req.matches(o) {
			continue
		}
		if req.res.custom {
			req.setKind(o)
		}
		b, err := json.Marshal(o)
		if err != nil {
			s.internalError(w, err)
			return
		}
		items = append(items, b)
	}
	writeJSON(w, http.StatusOK, &struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ListMeta   `json:"metadata"`
		Items           []json.RawMessage `json:"items"`
	}{TypeMeta: metav1.TypeMeta{Kind: req.res.kind + "List", APIVersion: req.res.gv.String()},
		Metadata: metav1.ListMeta{ResourceVersion: strconv.FormatUint(rv, 10)}, Items: items})
}

// serveWatch streams watch events as the API server does: one JSON
// metav1.WatchEvent after another, flushed as they come.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, req *request) {
	q := r.URL.Query()
	flusher, ok := w.(http.Flusher)
	if !ok {
		s.internalError(w, errors.New("response writer cannot flush"))
		return
	}
	// Like the API server's default (--min-request-timeout 30m, times 1 to 2).
	timeout := time.Duration(float64(30*time.Minute) * (1 + rand.Float64()))
	if v := q.Get("timeoutSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds: %q is not a number of seconds", v)))
			return
		}
		if n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	initialEvents := q.Get("sendInitialEvents") == "true"
	rvParam := q.Get("resourceVersion")
	var from uint64
	if rvParam != "" && rvParam != "0" && !initialEvents {
		var err error
		if from, err = strconv.ParseUint(rvParam, 10, 64); err != nil {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion: %q is not a resource version", rvParam)))
			return
		}
	}

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	enc := &watchEncoder{w: w, req: req}
	if from == 0 {
		// No version (or 0) means: the current state as ADDED events first.
		entries, rv := s.cache.list(req.res.name, req.namespace)
		for _, e := range entries {
			if err := enc.object(watch.Added, e.data, e.rv); err != nil {
				s.watchEnded(req, err)
				return
			}
		}
		if initialEvents && bookmarks {
			if err := enc.bookmark(rv, true); err != nil {
				s.watchEnded(req, err)
				return
			}
		}
		from = rv
	}
	flusher.Flush()

	ctx := r.Context()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var tick <-chan time.Time
	if bookmarks && s.cfg.BookmarkInterval > 0 {
		t := time.NewTicker(s.cfg.BookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	bookmarkDue := false
	for {
		events, rv, changed, err := s.cache.since(req.res.name, from)
		if errors.Is(err, errExpired) {
			// As the API server: an ERROR event with a 410 Expired status, so
			// that a reflector lists again.
			st := apierrors.NewResourceExpired(err.Error()).ErrStatus
			st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
			enc.raw(watch.Error, &st)
			flusher.Flush()
			return
		}
		for _, ev := range events {
			if err := enc.event(ev); err != nil {
				s.watchEnded(req, err)
				return
			}
		}
		from = rv
		if bookmarkDue {
			if err := enc.bookmark(rv, false); err != nil {
				s.watchEnded(req, err)
				return
			}
			bookmarkDue = false
		}
		flusher.Flush()
		select {
		case <-changed:
		case <-tick:
			bookmarkDue = true
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (s *Server) watchEnded(req *request, err error) {
	s.log.Debug("metaserver watch ended", slog.String("resource", req.res.name), slog.Any("err", err))
}

// watchEncoder writes the watch events of one request.
type watchEncoder struct {
	w   http.ResponseWriter
	req *request
}

// event writes ev as the request sees it: an object that starts matching
// its selectors is ADDED, one that stops matching DELETED.
func (e *watchEncoder) event(ev event) error {
	typ, data := ev.typ, ev.data
	if ev.typ == watch.Modified {
		cur, err := e.req.decode(ev.data, ev.rv)
		if err != nil {
			return err
		}
		prev, err := e.req.decode(ev.prev, ev.rv)
		if err != nil {
			return err
		}
		switch now, before := e.req.matches(cur), e.req.matches(prev); {
		case now && before:
		case now:
			typ = watch.Added
		case before:
			// The previous state, at the event's version, as the API server.
			typ, data = watch.Deleted, ev.prev
		default:
			return nil
		}
	}
	return e.object(typ, data, ev.rv)
}

func (e *watchEncoder) object(typ watch.EventType, data []byte, rv uint64) error {
	o, err := e.req.decode(data, rv)
	if err != nil {
		return err
	}
	if !e.req.matches(o) {
		return nil
	}
	e.req.setKind(o)
	return e.raw(typ, o)
}

// bookmark writes a BOOKMARK at version rv; initialEnd marks the end of the
// initial events of a watch that asked for them (sendInitialEvents).
func (e *watchEncoder) bookmark(rv uint64, initialEnd bool) error {
	o, err := e.req.res.decode(nil)
	if err != nil {
		return err
	}
	e.req.setKind(o)
	o.SetResourceVersion(strconv.FormatUint(rv, 10))
	if initialEnd {
		o.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	return e.raw(watch.Bookmark, o)
}

func (e *watchEncoder) raw(typ watch.EventType, o runtime.Object) error {
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	b, err = json.Marshal(&metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: b}})
	if err != nil {
		return err
	}
	_, err = e.w.Write(append(b, '\n'))
	return err
}

func (s *Server) internalError(w http.ResponseWriter, err error) {
	s.log.Error("metaserver request failed", slog.Any("err", err))
	writeStatus(w, apierrors.NewInternalError(err))
}

func notFound() *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound,
		Reason: metav1.StatusReasonNotFound, Message: "the server could not find the requested resource"}}
}

func writeStatus(w http.ResponseWriter, e *apierrors.StatusError) {
	st := e.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	writeJSON(w, int(st.Code), &st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","code":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
