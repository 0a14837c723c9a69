package protocol

import (
	"strings"
	"testing"
)

func TestParseAPIWritePath(t *testing.T) {
	for _, c := range []struct {
		method, path string
		want         APIPath // zero Resource: refused
	}{
		{"POST", "/api/v1/namespaces/store/configmaps", APIPath{Version: "v1", Namespace: "store", Resource: "configmaps"}},
		{"PUT", "/api/v1/namespaces/store/configmaps/x", APIPath{Version: "v1", Namespace: "store", Resource: "configmaps", Name: "x"}},
		{"PATCH", "/api/v1/namespaces/store/pods/p/status", APIPath{Version: "v1", Namespace: "store", Resource: "pods", Name: "p", Subresource: "status"}},
		{"POST", "/api/v1/namespaces/store/pods/p/eviction", APIPath{Version: "v1", Namespace: "store", Resource: "pods", Name: "p", Subresource: "eviction"}},
		{"DELETE", "/apis/apps/v1/namespaces/store/deployments/d", APIPath{Group: "apps", Version: "v1", Namespace: "store", Resource: "deployments", Name: "d"}},
		{"DELETE", "/api/v1/namespaces/store/configmaps", APIPath{Version: "v1", Namespace: "store", Resource: "configmaps"}},
		{"PATCH", "/api/v1/nodes/n1", APIPath{Version: "v1", Resource: "nodes", Name: "n1"}},
		{"POST", "/api/v1/namespaces", APIPath{Version: "v1", Resource: "namespaces"}},
		{"DELETE", "/api/v1/namespaces/store", APIPath{Version: "v1", Resource: "namespaces", Name: "store"}},
		// Refused.
		{"GET", "/api/v1/namespaces/store/configmaps", APIPath{}},
		{"CONNECT", "/api/v1/namespaces/store/pods/p/exec", APIPath{}},
		{"POST", "/api/v1/namespaces/store/pods/p/exec", APIPath{}},
		{"POST", "/api/v1/namespaces/store/pods/p/attach", APIPath{}},
		{"POST", "/api/v1/namespaces/store/pods/p/portforward", APIPath{}},
		{"PUT", "/api/v1/namespaces/store/pods/p/proxy", APIPath{}},
		{"POST", "/api/v1/namespaces/store/pods/p/binding", APIPath{}},
		{"PATCH", "/api/v1/namespaces/store/pods/p/ephemeralcontainers", APIPath{}},
		{"POST", "/api/v1/namespaces/store/configmaps/x/eviction", APIPath{}},
		{"POST", "/api/v1/watch/namespaces/store/configmaps", APIPath{}},
		{"POST", "/api/v1/namespaces/store/configmaps/x", APIPath{}},
		{"PUT", "/api/v1/namespaces/store/configmaps", APIPath{}},
		{"PUT", "/api/v1/namespaces/store/configmaps/../../../nodes/n1", APIPath{}},
		{"PUT", "/api/v1/namespaces//configmaps/x", APIPath{}},
		{"PUT", "/api/v1/namespaces/store/configmaps/x%2Fy", APIPath{}},
		{"POST", "/healthz", APIPath{}},
		{"POST", "/api/v2/namespaces/store/configmaps", APIPath{}},
		{"POST", "api/v1/namespaces/store/configmaps", APIPath{}},
		{"POST", "/api/v1/namespaces/store/configmaps/x/status/more", APIPath{}},
		{"POST", "/api/v1/" + strings.Repeat("x", 1100), APIPath{}},
	} {
		got, err := ParseAPIWritePath(c.method, c.path)
		if c.want.Resource == "" {
			if err == nil {
				t.Errorf("%s %s: accepted as %+v", c.method, c.path, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s %s: %+v, %v; want %+v", c.method, c.path, got, err, c.want)
		}
	}
}

func TestAPIRelayLimits(t *testing.T) {
	ok := APIRequest{ID: 1, Namespace: "store", Pod: "pos", PodUID: "u", ServiceAccount: "writer", Method: "POST",
		Path: "/api/v1/namespaces/store/configmaps", Body: []byte("{}")}
	if err := (&Frame{APIRequest: &ok}).Validate(); err != nil {
		t.Fatal(err)
	}
	big, noPod, noID, exec, crlf, longQuery := ok, ok, ok, ok, ok, ok
	big.Body = make([]byte, MaxAPIBody+1)
	noPod.PodUID = ""
	noID.ID = 0
	exec.Path = "/api/v1/namespaces/store/pods/p/exec"
	crlf.ContentType = "application/json\r\nAuthorization: Bearer x"
	longQuery.Query = strings.Repeat("a", maxAPIQuery+1)
	for name, f := range map[string]*Frame{
		"body over 1 MiB":       {APIRequest: &big},
		"no pod uid":            {APIRequest: &noPod},
		"id 0":                  {APIRequest: &noID},
		"exec":                  {APIRequest: &exec},
		"header injection":      {APIRequest: &crlf},
		"long query":            {APIRequest: &longQuery},
		"with a seq":            {Seq: 3, APIRequest: &ok},
		"status 0":              {APIResponse: &APIResponse{ID: 1}},
		"status 600":            {APIResponse: &APIResponse{ID: 1, Status: 600}},
		"response body too big": {APIResponse: &APIResponse{ID: 1, Status: 200, Body: make([]byte, MaxAPIResponseBody+1)}},
		"too many warnings":     {APIResponse: &APIResponse{ID: 1, Status: 200, Warnings: make([]string, MaxAPIWarnings+1)}},
		"warning with a break":  {APIResponse: &APIResponse{ID: 1, Status: 200, Warnings: []string{"a\nb"}}},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
	// The largest request and response fit a frame.
	big.Body = make([]byte, MaxAPIBody)
	big.Query = strings.Repeat("a", maxAPIQuery)
	if _, err := Encode(&Frame{APIRequest: &big}); err != nil {
		t.Error(err)
	}
	if _, err := Encode(&Frame{APIResponse: &APIResponse{ID: 1, Status: 200, Warnings: []string{strings.Repeat("w", maxAPIWarning)},
		Body: make([]byte, MaxAPIResponseBody)}}); err != nil {
		t.Error(err)
	}
}
