// Package join is the edge side of joining a cloud: `edgecore join` fetches
// the hub's CA bundle, checks it against the pin the join token carries
// (before anything secret is sent: no trust on first use, never the system
// roots), makes the node's ECDSA key, which never leaves the machine, sends
// a certificate request with the token, and writes the key and the
// certificate it gets (mode 0600), the CA, and an edgecore configuration
// that runs with them.
package join

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/edgecore/credentials"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// Options of a join.
type Options struct {
	// Cloud is the hub's HOST:PORT.
	Cloud string
	// Token is the join token from `cloudcore token create`.
	Token string
	// NodeName is the node's name (default: the host name, lower case).
	NodeName string
	// ConfigPath is the edgecore configuration to write. If it exists, its
	// other settings are kept and only nodeName and cloud are set.
	ConfigPath string
	// PKIDir holds ca.crt and node.pem (default: pki/ beside ConfigPath).
	PKIDir string
	// Timeout bounds each request (default 30s).
	Timeout time.Duration
}

// Result says what a join wrote.
type Result struct {
	NodeName, ConfigPath, CAFile, CredentialsFile string
	NotAfter                                      time.Time
}

// Join joins the node to the cloud and writes its files.
func Join(ctx context.Context, o Options) (*Result, error) {
	if o.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("--node-name: empty and no host name: %w", err)
		}
		o.NodeName = strings.ToLower(h)
	}
	if err := protocol.ValidateNodeName(o.NodeName); err != nil {
		return nil, fmt.Errorf("node name: %w", err)
	}
	host, _, err := net.SplitHostPort(o.Cloud)
	if err != nil {
		return nil, fmt.Errorf("--cloud %q: want HOST:PORT: %w", o.Cloud, err)
	}
	if o.ConfigPath == "" {
		return nil, errors.New("--config: the path of the edgecore configuration to write is required")
	}
	if o.PKIDir == "" {
		o.PKIDir = filepath.Join(filepath.Dir(o.ConfigPath), "pki")
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	bootstrap, pin, err := pki.ParseJoinToken(o.Token)
	if err != nil {
		return nil, err
	}
	base := "https://" + o.Cloud

	// 1. The CA bundle, over a connection not yet trusted: it is believed
	// only if its pin is the token's.
	insecure := &http.Client{Timeout: o.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}}
	bundle, err := get(ctx, insecure, base+"/v1/ca")
	if err != nil {
		return nil, fmt.Errorf("fetch the cloud's CA: %w", err)
	}
	cas, err := pki.ParseCertsPEM(bundle)
	if err != nil {
		return nil, fmt.Errorf("the cloud's CA: %w", err)
	}
	if got := pki.Hash(cas...); got != pin {
		return nil, fmt.Errorf("the CA served at %s has hash %s, the join token expects %s: refused, "+
			"nothing was sent (wrong address, or someone in between)", o.Cloud, got, pin)
	}
	roots := x509.NewCertPool()
	for _, c := range cas {
		roots.AddCert(c)
	}

	// 2. From here the hub is verified against the pinned CA.
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NodeCSR(key, o.NodeName)
	if err != nil {
		return nil, err
	}
	trusted := &http.Client{Timeout: o.Timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}}}
	body, err := json.Marshal(map[string]string{"token": bootstrap, "nodeName": o.NodeName, "csr": string(csr)})
	if err != nil {
		return nil, err
	}
	rb, err := post(ctx, trusted, base+"/v1/join", body)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	var issued struct {
		Certificate string `json:"certificate"`
	}
	if err := json.Unmarshal(rb, &issued); err != nil {
		return nil, fmt.Errorf("join: answer: %w", err)
	}
	certs, err := pki.ParseCertsPEM([]byte(issued.Certificate))
	if err != nil {
		return nil, fmt.Errorf("join: issued certificate: %w", err)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("join: issued certificate: %w", err)
	}
	if n, _, err := pki.NodeIdentity(leaf); err != nil || n != o.NodeName {
		return nil, fmt.Errorf("join: the certificate issued is for %q, not %q (%v)", n, o.NodeName, err)
	}

	// 3. The files.
	if err := os.MkdirAll(o.PKIDir, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	res := &Result{NodeName: o.NodeName, ConfigPath: o.ConfigPath, NotAfter: leaf.NotAfter,
		CAFile: filepath.Join(o.PKIDir, "ca.crt"), CredentialsFile: filepath.Join(o.PKIDir, "node.pem")}
	creds, err := credentials.Encode([]byte(issued.Certificate), key)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFileSync(res.CredentialsFile, creds, 0o600); err != nil {
		return nil, err
	}
	if err := pki.WriteFileSync(res.CAFile, bundle, 0o644); err != nil {
		return nil, err
	}
	if err := writeConfig(o.ConfigPath, o.NodeName, "wss://"+o.Cloud+"/v1/connect", res); err != nil {
		return nil, err
	}
	return res, nil
}

// writeConfig sets nodeName and cloud in the configuration at path, keeping
// whatever else it holds.
func writeConfig(path, node, url string, res *Result) error {
	doc := map[string]any{}
	if b, err := os.ReadFile(path); err == nil {
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
		if doc == nil {
			doc = map[string]any{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("config: %w", err)
	}
	cloud, _ := doc["cloud"].(map[string]any)
	if cloud == nil {
		cloud = map[string]any{}
	}
	delete(cloud, "token")
	delete(cloud, "tokenFile")
	cloud["url"], cloud["caFile"], cloud["credentialsFile"] = url, res.CAFile, res.CredentialsFile
	doc["cloud"], doc["nodeName"] = cloud, node
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("config dir: %w", err)
	}
	return pki.WriteFileSync(path, b, 0o600)
}

func get(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return do(c, req)
}

func post(ctx context.Context, c *http.Client, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(c, req)
}

func do(c *http.Client, req *http.Request) ([]byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}
