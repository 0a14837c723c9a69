package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	tpki "github.com/tether-edge/tether/pki"
)

// The users of the static token file. The controller manager and scheduler
// names are the ones the apiserver's bootstrap RBAC policy binds roles to.
const (
	adminUser             = "tether-admin"
	controllerManagerUser = "system:kube-controller-manager"
	schedulerUser         = "system:kube-scheduler"
)

// KubeletClientUser is the user of the API server's client certificate to
// kubelets (--kubelet-client-certificate), bound to the ClusterRole
// system:kubelet-api-admin as kubeadm does.
const KubeletClientUser = "kube-apiserver-kubelet-client"

// pki holds the paths of the files writePKI creates, the CA certificate
// in PEM form and the bearer tokens of the static token file.
type pki struct {
	caCert, caKey         string
	serverCert, serverKey string
	saKey, saPub          string
	tokenFile             string
	// kubeletCert and kubeletKey are the API server's client certificate
	// to kubelets (KubeletClientUser).
	kubeletCert, kubeletKey string
	ca                      *tpki.CA

	// frontProxyCA and frontProxyCert/Key are the aggregation layer's
	// (writeFrontProxy): the CA an aggregated API server trusts for the
	// API server's proxied requests, and the API server's client
	// certificate to them (FrontProxyClientUser).
	frontProxyCA, frontProxyCert, frontProxyKey string

	caPEM  []byte
	tokens map[string]string // user name to token
}

// writePKI creates a CA, an apiserver serving certificate for the given IPs
// and DNS names, a service-account key pair and a static token file in dir.
// Keys are ECDSA P-256: quick to generate and accepted by every component.
func writePKI(dir string, ips []net.IP, dnsNames []string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	p := &pki{
		caCert:     filepath.Join(dir, "ca.crt"),
		caKey:      filepath.Join(dir, "ca.key"),
		serverCert: filepath.Join(dir, "apiserver.crt"),
		serverKey:  filepath.Join(dir, "apiserver.key"),
		saKey:      filepath.Join(dir, "sa.key"),
		saPub:      filepath.Join(dir, "sa.pub"),
		tokenFile:  filepath.Join(dir, "tokens.csv"),
		tokens:     map[string]string{},

		kubeletCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		kubeletKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
	}

	ca, err := tpki.NewCA("tether-controlplane-ca")
	if err != nil {
		return nil, err
	}
	p.ca = ca
	p.caPEM = ca.CertPEM()
	caKeyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	srvCert, srvKey, err := ca.IssueServer("kube-apiserver", dnsNames, ips, 10*365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("apiserver certificate: %w", err)
	}

	kubeletCert, kubeletKey, err := ca.IssueClient(KubeletClientUser, nil, 10*365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("apiserver kubelet client certificate: %w", err)
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}

	saKeyBlock := ecKeyBlock(saKey)
	if saKeyBlock == nil {
		return nil, errors.New("marshal service-account key")
	}
	files := []struct {
		path string
		data []byte
	}{
		{p.caCert, p.caPEM},
		{p.caKey, caKeyPEM},
		{p.serverCert, srvCert},
		{p.serverKey, srvKey},
		{p.kubeletCert, kubeletCert},
		{p.kubeletKey, kubeletKey},
		{p.saKey, pem.EncodeToMemory(saKeyBlock)},
		{p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", filepath.Base(f.path), err)
		}
	}

	// Static token file: token,user,uid,"group1,group2".
	var csv []byte
	for _, u := range []struct{ user, groups string }{
		{adminUser, "system:masters"},
		{controllerManagerUser, ""},
		{schedulerUser, ""},
	} {
		tok, err := randomToken()
		if err != nil {
			return nil, err
		}
		p.tokens[u.user] = tok
		csv = fmt.Appendf(csv, "%s,%s,%s", tok, u.user, u.user)
		if u.groups != "" {
			csv = fmt.Appendf(csv, ",%q", u.groups)
		}
		csv = append(csv, '\n')
	}
	if err := os.WriteFile(p.tokenFile, csv, 0o600); err != nil {
		return nil, fmt.Errorf("write token file: %w", err)
	}
	return p, nil
}

// FrontProxyClientUser is the name in the API server's client certificate
// to aggregated API servers (--proxy-client-cert-file), the only name
// they take X-Remote-User headers from (--requestheader-allowed-names).
const FrontProxyClientUser = "front-proxy-client"

// writeFrontProxy creates the aggregation layer's CA, of its own as
// kubeadm's (a certificate of the cluster's client CA must not be able to
// assert any user to an aggregated API server), and the API server's
// client certificate to aggregated API servers.
func (p *pki) writeFrontProxy(dir string) error {
	ca, err := tpki.NewCA("tether-front-proxy-ca")
	if err != nil {
		return err
	}
	cert, key, err := ca.IssueClient(FrontProxyClientUser, nil, 10*365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("front proxy client certificate: %w", err)
	}
	p.frontProxyCA = filepath.Join(dir, "front-proxy-ca.crt")
	p.frontProxyCert = filepath.Join(dir, "front-proxy-client.crt")
	p.frontProxyKey = filepath.Join(dir, "front-proxy-client.key")
	for path, b := range map[string][]byte{p.frontProxyCA: ca.CertPEM(), p.frontProxyCert: cert, p.frontProxyKey: key} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Base(path), err)
		}
	}
	return nil
}

func ecKeyBlock(k *ecdsa.PrivateKey) *pem.Block {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil
	}
	return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
