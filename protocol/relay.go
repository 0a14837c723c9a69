package protocol

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// The API relay (since version 7) carries the writes of the edge's pods to
// the Kubernetes API: a pod's create, update, patch or delete that reaches
// the in-cluster API at the edge goes up as an APIRequest, naming the pod
// its token was issued to; the hub sends it to the API server with a token
// of that pod's service account, bound to the pod, and answers the API
// server's response in an APIResponse of the same ID. Neither is
// acknowledged nor carries a Seq: a request whose session ends is lost, and
// the pod gets 503 (a write is the pod's to retry, as with any API server
// that goes away). The hub answers a pod that is not bound to the node of
// the session, or whose UID or service account differ, with 403.

// APIRelaySince is the protocol version that carries APIRequest and
// APIResponse.
const APIRelaySince = 7

// MaxAPIBody is the largest body of an APIRequest (the edge answers a
// larger one 413), and MaxAPIResponseBody that of an APIResponse (the hub
// answers 502 for a larger response of the API server), which leaves room
// in a frame for the rest.
const (
	MaxAPIBody         = 1 << 20
	MaxAPIResponseBody = MaxFrameSize - 64<<10
)

// Bounds of the other fields of an APIRequest and an APIResponse.
const (
	maxAPIPath     = 1024
	maxAPIQuery    = 4096
	maxAPIHeader   = 256
	MaxAPIWarnings = 16
	maxAPIWarning  = 1024
)

// APIRequest is one write of a pod of the node. Sent by the edge, without a
// Seq, only to a hub that welcomed it with 7 or more.
type APIRequest struct {
	ID uint64 `cbor:"1,keyasint"`
	// The pod the request comes from, as the token it presented at the
	// edge says (the edge verified it); the hub checks the pod is bound
	// to the node of the session with this UID and service account.
	Namespace      string `cbor:"2,keyasint"`
	Pod            string `cbor:"3,keyasint"`
	PodUID         string `cbor:"4,keyasint"`
	ServiceAccount string `cbor:"5,keyasint"`
	// Method is POST, PUT, PATCH or DELETE.
	Method string `cbor:"6,keyasint"`
	// Path is the request's URL path, a resource path of the API that
	// ParseAPIWritePath accepts; Query its raw query.
	Path  string `cbor:"7,keyasint"`
	Query string `cbor:"8,keyasint,omitempty"`
	// ContentType, Accept and UserAgent are the request's headers.
	ContentType string `cbor:"9,keyasint,omitempty"`
	Accept      string `cbor:"10,keyasint,omitempty"`
	UserAgent   string `cbor:"11,keyasint,omitempty"`
	Body        []byte `cbor:"12,keyasint,omitempty"`
}

// APIResponse answers the APIRequest of the same ID: the API server's
// response, or the hub's refusal (a Kubernetes Status in Body). Sent by the
// hub, without a Seq.
type APIResponse struct {
	ID          uint64   `cbor:"1,keyasint"`
	Status      int      `cbor:"2,keyasint"`
	ContentType string   `cbor:"3,keyasint,omitempty"`
	Warnings    []string `cbor:"4,keyasint,omitempty"`
	Body        []byte   `cbor:"5,keyasint,omitempty"`
}

// APIPath is a resource path of the Kubernetes API, parsed.
type APIPath struct {
	Group, Version string
	// Namespace is "" for a cluster-scoped resource.
	Namespace string
	Resource  string
	// Name is "" for a collection.
	Name string
	// Subresource is "", "status" or "eviction".
	Subresource string
}

// ParseAPIWritePath parses the path of a write to the Kubernetes API:
// /api/v1/[namespaces/NS/]RESOURCE[/NAME[/SUBRESOURCE]] or
// /apis/GROUP/VERSION/..., with the subresources status and (of pods)
// eviction only, and checks that method fits its shape: POST to a
// collection or to eviction, PUT and PATCH to an object or its status,
// DELETE to an object or a collection. Watches, proxies, exec, attach,
// port-forward and logs are refused, as are empty, "." and ".." segments.
func ParseAPIWritePath(method, path string) (APIPath, error) {
	var p APIPath
	if len(path) > maxAPIPath {
		return p, fmt.Errorf("path of %d bytes, at most %d", len(path), maxAPIPath)
	}
	segs := strings.Split(path, "/")
	if segs[0] != "" {
		return p, fmt.Errorf("path %q is not absolute", path)
	}
	segs = segs[1:]
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || len(s) > 253 || strings.ContainsAny(s, "?#%\\") {
			return p, fmt.Errorf("path %q has an empty, dot or malformed segment", path)
		}
	}
	switch {
	case len(segs) >= 2 && segs[0] == "api" && segs[1] == "v1":
		p.Version, segs = "v1", segs[2:]
	case len(segs) >= 3 && segs[0] == "apis":
		p.Group, p.Version, segs = segs[1], segs[2], segs[3:]
	default:
		return p, fmt.Errorf("path %q is not a resource path of the API (/api/v1/..., /apis/GROUP/VERSION/...)", path)
	}
	if len(segs) > 0 && segs[0] == "watch" {
		return p, errors.New("watches are not relayed")
	}
	if len(segs) >= 3 && segs[0] == "namespaces" {
		p.Namespace, segs = segs[1], segs[2:]
	}
	if len(segs) == 0 || len(segs) > 3 {
		return p, fmt.Errorf("path %q names no resource", path)
	}
	p.Resource = segs[0]
	if len(segs) > 1 {
		p.Name = segs[1]
	}
	if len(segs) > 2 {
		p.Subresource = segs[2]
	}
	switch {
	case p.Subresource == "" || p.Subresource == "status":
	case p.Subresource == "eviction" && p.Group == "" && p.Resource == "pods":
	default:
		return p, fmt.Errorf("subresource %q is not relayed (status and pods' eviction are)", p.Subresource)
	}
	ok := false
	switch method {
	case http.MethodPost:
		ok = p.Name == "" || p.Subresource == "eviction"
	case http.MethodPut, http.MethodPatch:
		ok = p.Name != "" && p.Subresource != "eviction"
	case http.MethodDelete:
		ok = p.Subresource == ""
	default:
		return p, fmt.Errorf("method %q is not a write (POST, PUT, PATCH, DELETE)", method)
	}
	if !ok {
		return p, fmt.Errorf("%s does not apply to %s", method, path)
	}
	return p, nil
}

func (r *APIRequest) validate() error {
	for name, v := range map[string]string{"namespace": r.Namespace, "pod": r.Pod, "podUID": r.PodUID,
		"serviceAccount": r.ServiceAccount} {
		if v == "" || len(v) > maxAccessField {
			return fmt.Errorf("%s of %d characters: want 1 to %d", name, len(v), maxAccessField)
		}
	}
	if r.ID == 0 {
		return errors.New("id is 0")
	}
	if _, err := ParseAPIWritePath(r.Method, r.Path); err != nil {
		return err
	}
	if len(r.Query) > maxAPIQuery {
		return fmt.Errorf("query of %d bytes, at most %d", len(r.Query), maxAPIQuery)
	}
	for _, h := range []string{r.ContentType, r.Accept, r.UserAgent} {
		if len(h) > maxAPIHeader || strings.ContainsAny(h, "\r\n") {
			return fmt.Errorf("a header over %d bytes or with a line break", maxAPIHeader)
		}
	}
	if len(r.Body) > MaxAPIBody {
		return fmt.Errorf("body of %d bytes, at most %d", len(r.Body), MaxAPIBody)
	}
	return nil
}

func (r *APIResponse) validate() error {
	if r.ID == 0 {
		return errors.New("id is 0")
	}
	if r.Status < 100 || r.Status > 599 {
		return fmt.Errorf("status %d is not an HTTP status", r.Status)
	}
	if len(r.ContentType) > maxAPIHeader || strings.ContainsAny(r.ContentType, "\r\n") {
		return fmt.Errorf("content type over %d bytes or with a line break", maxAPIHeader)
	}
	if len(r.Warnings) > MaxAPIWarnings {
		return fmt.Errorf("%d warnings, at most %d", len(r.Warnings), MaxAPIWarnings)
	}
	for _, w := range r.Warnings {
		if len(w) > maxAPIWarning || strings.ContainsAny(w, "\r\n") {
			return fmt.Errorf("a warning over %d bytes or with a line break", maxAPIWarning)
		}
	}
	if len(r.Body) > MaxAPIResponseBody {
		return fmt.Errorf("body of %d bytes, at most %d", len(r.Body), MaxAPIResponseBody)
	}
	return nil
}
