package metaserver

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/pki"
)

// Client is a caller the metaserver serves: whoever presents Token as
// "Authorization: Bearer <token>" may read Resources (nil: every resource).
type Client struct {
	// Name names the client in logs.
	Name string
	// Token is compared in constant time; at least 32 characters.
	Token string
	// Resources it may read, by resource name ("pods", "devices"...);
	// nil for all.
	Resources []string
	// pod is set for a pod of the node (the in-cluster listener): its reads
	// are authorized per request, Resources is empty.
	pod *satoken.Pod
}

// may reports whether c may read res.
func (c *Client) may(res string) bool { return c.Resources == nil || slices.Contains(c.Resources, res) }

// The clients edgecore provisions, their token files in its credentials
// directory (LocalClients).
const (
	// NodeClient reads everything the node holds, secrets included, as
	// the node itself could in the cluster: for the node's administrator
	// (root).
	NodeClient = "node"
	// DevicesClient reads the node, its devices and their models: for
	// device mappers. It gets no pods, configmaps or secrets.
	DevicesClient = "devices"
	// MetricsClient reads /metrics only: for a Prometheus agent on the
	// box.
	MetricsClient = "metrics"
)

// MetricsResource is the pseudo-resource of /metrics in Client.Resources.
const MetricsResource = "metrics"

// DevicesResources are what DevicesClient may read.
var DevicesResources = []string{resNodes, resDevices, resDeviceModels}

// TokenFile is the path of client's token in the credentials directory dir.
func TokenFile(dir, client string) string { return filepath.Join(dir, "metaserver-"+client+".token") }

// LocalClients returns the node, devices and metrics clients with their tokens,
// read from dir, or made and written there (mode 0600, dir 0700) when
// missing or unreadable, so that the files stay valid across restarts and
// a process must be able to read one (root, or whom the operator lets) to
// call the metaserver.
func LocalClients(dir string) ([]Client, error) {
	var clients []Client
	for _, c := range []Client{{Name: NodeClient}, {Name: DevicesClient, Resources: DevicesResources},
		{Name: MetricsClient, Resources: []string{MetricsResource}}} {
		tok, err := pki.SecretFile(TokenFile(dir, c.Name), 32)
		if err != nil {
			return nil, fmt.Errorf("metaserver credentials: %w", err)
		}
		c.Token = tok
		clients = append(clients, c)
	}
	return clients, nil
}

// authenticate returns the client of r's bearer token, or answers 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*Client, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok {
		for i := range s.cfg.Clients {
			c := &s.cfg.Clients[i]
			if subtle.ConstantTimeCompare([]byte(tok), []byte(c.Token)) == 1 {
				return c, true
			}
		}
	}
	s.refused.Add(1)
	writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure,
		Code: http.StatusUnauthorized, Reason: metav1.StatusReasonUnauthorized,
		Message: "the edge metaserver needs a bearer token: the metaserver-*.token files in edgecore's credentials directory"}})
	return nil, false
}

// checkHost refuses a request whose Host is not a loopback name or address:
// a web page in a browser on the node that resolves its own name to
// 127.0.0.1 (DNS rebinding) must not read the metaserver.
func (s *Server) checkHost(w http.ResponseWriter, r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || strings.EqualFold(host, "localhost") {
		return true
	}
	s.refused.Add(1)
	writeStatus(w, apierrors.NewForbidden(schema.GroupResource{}, "",
		errors.New("unexpected Host header: the edge metaserver answers requests for a loopback address or localhost only")))
	return false
}

// guard wraps h: a loopback Host, an authenticated client, and, for a
// resource request, a client that may read the resource.
func (s *Server) guard(h func(w http.ResponseWriter, r *http.Request, c *Client)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.checkHost(w, r) {
			return
		}
		c, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		h(w, r, c)
	}
}

// forbidden answers that c may not read res.
func (s *Server) forbidden(w http.ResponseWriter, c *Client, res string) {
	s.refused.Add(1)
	writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Resource: res}, "",
		fmt.Errorf("the metaserver client %q may not read %s", c.Name, res)))
}
