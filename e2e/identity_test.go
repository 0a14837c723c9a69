//go:build integration

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/cloudcore/hub"
	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/cloudcore/status"
	"github.com/tether-edge/tether/edgecore/credentials"
	"github.com/tether-edge/tether/edgecore/join"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// The join flow as an operator runs it: a token, `edgecore join`, the node
// Ready; and every way a join must fail, with a clear error.
func TestJoin(t *testing.T) {
	c := startCloud(t)
	start := time.Now()
	e := newEdge(t, c, "e2e-join-1") // a one-use token, edgecore join
	joined := time.Since(start)
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	t.Logf("join time: token to certificate %s, token to node Ready %s", joined.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	n, err := client.CoreV1().Nodes().Get(t.Context(), e.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels[status.EdgeRoleLabel]; !ok || n.Annotations[enroll.AnnotationIdentity] == "" {
		t.Errorf("joined Node: labels %v, annotations %v", n.Labels, n.Annotations)
	}
	if fi, err := os.Stat(e.credsFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	pin := pki.Hash(c.cc.CA.Cert)
	tryJoin := func(node, token string) error {
		_, err := join.Join(t.Context(), join.Options{Cloud: c.addr, Token: token, NodeName: node,
			ConfigPath: filepath.Join(t.TempDir(), "edgecore.yaml")})
		return err
	}
	// A used-up token.
	tok, err := jointoken.Create(t.Context(), client, jointoken.Options{TTL: time.Hour, Uses: 1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := tryJoin("e2e-join-2", jointoken.JoinString(tok, pin)); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := tryJoin("e2e-join-3", jointoken.JoinString(tok, pin)); err == nil || !strings.Contains(err.Error(), "used up") {
		t.Errorf("used-up token: %v", err)
	}
	// An expired token.
	old, err := jointoken.Create(t.Context(), client, jointoken.Options{TTL: time.Hour}, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := tryJoin("e2e-join-4", jointoken.JoinString(old, pin)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	// An unknown token.
	if err := tryJoin("e2e-join-5", pki.JoinToken("abcdef.0123456789abcdef", pin)); err == nil ||
		!strings.Contains(err.Error(), "unknown join token") {
		t.Errorf("unknown token: %v", err)
	}
	// A token whose pin is not the hub's CA: refused before the token is
	// sent (the hub sees no join attempt; the token keeps its use).
	other, err := pki.NewCA("not-the-cloud")
	if err != nil {
		t.Fatal(err)
	}
	tok2, err := jointoken.Create(t.Context(), client, jointoken.Options{TTL: time.Hour, Uses: 1}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	before := c.cc.Enroll.Stats()
	if err := tryJoin("e2e-join-6", jointoken.JoinString(tok2, pki.Hash(other.Cert))); err == nil ||
		!strings.Contains(err.Error(), "nothing was sent") {
		t.Errorf("CA pin mismatch: %v", err)
	}
	if after := c.cc.Enroll.Stats(); after.Joined != before.Joined || after.JoinRefused != before.JoinRefused {
		t.Errorf("the hub saw a join attempt with a wrong pin: %+v -> %+v", before, after)
	}
	if err := tryJoin("e2e-join-6", jointoken.JoinString(tok2, pin)); err != nil {
		t.Errorf("the token after the pin mismatch: %v (it must still have its use)", err)
	}
	// A node that exists already joins again only with a token made for it.
	any1, err := jointoken.Create(t.Context(), client, jointoken.Options{TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := tryJoin("e2e-join-2", jointoken.JoinString(any1, pin)); err == nil ||
		!strings.Contains(err.Error(), "cloudcore token create --node e2e-join-2") {
		t.Errorf("re-join of an existing node with an unscoped token: %v", err)
	}
	if err := tryJoin("e2e-join-2", c.joinToken("e2e-join-2")); err != nil {
		t.Errorf("re-join with a token for the node: %v", err)
	}
}

// A kubelet node's name (a Node without the edge label) can get no
// certificate, and a certificate made for it anyway gets no session.
func TestKubeletNodeRefused(t *testing.T) {
	c := startCloud(t)
	const name = "e2e-kubelet-node"
	if _, err := client.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	_, err := join.Join(t.Context(), join.Options{Cloud: c.addr, Token: c.joinToken(""), NodeName: name,
		ConfigPath: filepath.Join(t.TempDir(), "edgecore.yaml")})
	if err == nil || !strings.Contains(err.Error(), "not an edge node") {
		t.Fatalf("join as a kubelet node: %v", err)
	}
	key, _ := pki.NewKey()
	if _, err := c.cc.Enroll.Direct(t.Context(), name, &key.PublicKey); err == nil {
		t.Fatal("a certificate was issued for a kubelet node")
	}
	// A certificate for it signed by the CA anyway (a stolen CA key would
	// do that): the hub still refuses the session.
	certPEM, err := c.cc.CA.IssueNode(&key.PublicKey, name, "forged", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialHub(t, c, certPEM, key, name); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("session as a kubelet node: %v", err)
	}
	if n, _ := client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{}); n != nil {
		if _, edge := n.Labels[status.EdgeRoleLabel]; edge {
			t.Fatal("the kubelet node got the edge label")
		}
	}
}

// `kubectl delete node` revokes: the session closes within seconds, the
// certificate is refused from then on, and the name joins again only with a
// new token.
func TestDeletedNodeCutOff(t *testing.T) {
	c := startCloud(t)
	e := startEdge(t, c, "e2e-revoke")
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	oldCreds, err := os.ReadFile(e.credsFile)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := client.CoreV1().Nodes().Delete(t.Context(), e.name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "revoked edge disconnected", func() (bool, error) {
		return !e.ec.Agent.State().Connected, nil
	})
	t.Logf("deleted node cut off after %s", time.Since(start).Round(time.Millisecond))
	if st := c.cc.Hub.Stats(); st.Revoked < 1 {
		t.Errorf("hub stats %+v: want a revoked session", st)
	}
	time.Sleep(2 * time.Second) // the edge keeps trying
	if e.ec.Agent.State().Connected {
		t.Fatal("the revoked edge connected again")
	}
	if _, err := client.CoreV1().Nodes().Get(t.Context(), e.name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the deleted Node came back: %v", err)
	}
	e.stop()
	// Joining again takes a new token; then the old certificate is refused.
	res, err := join.Join(t.Context(), join.Options{Cloud: e.link.addr(), Token: c.joinToken(""), NodeName: e.name,
		ConfigPath: filepath.Join(e.dir, "joined.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	e.credsFile = res.CredentialsFile
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	certs, err := pki.ParseCertsPEM(oldCreds)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKeyPEM(oldCreds)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})
	if _, err := dialHub(t, c, certPEM, key, e.name); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("the certificate from before the re-join: %v", err)
	}
}

// A client certificate of two minutes rotates in the session while pods
// sync: nothing is lost, no reconnect is needed, and the next connection
// uses the new certificate.
func TestCertificateRotation(t *testing.T) {
	ns := namespace(t)
	c := startCloudWith(t, func(cfg *cloudcore.Config) {
		cfg.ClientCertValidity = metav1.Duration{Duration: time.Minute}
	})
	e := startEdge(t, c, "e2e-rotate")
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	first, err := os.ReadFile(e.credsFile)
	if err != nil {
		t.Fatal(err)
	}
	firstCert, _ := pki.ParseCertsPEM(first)
	var created []string
	deadline := time.Now().Add(90 * time.Second)
	for c.cc.Hub.Stats().CertsIssued == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no renewal within 90s")
		}
		name := "p" + time.Now().Format("150405.000")
		name = strings.ReplaceAll(name, ".", "-")
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, name, e.name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		created = append(created, name)
		time.Sleep(time.Second)
	}
	eventually(t, 10*time.Second, "new credentials written", func() (bool, error) {
		b, err := os.ReadFile(e.credsFile)
		return err == nil && string(b) != string(first), err
	})
	for i := 0; i < 3; i++ { // a few more after the renewal
		name := "after-" + string(rune('a'+i))
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, name, e.name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		created = append(created, name)
	}
	eventually(t, 30*time.Second, "every pod at the edge", func() (bool, error) {
		for _, p := range created {
			if e.byName(protocol.KindPod, ns, p) == nil {
				return false, nil
			}
		}
		return true, nil
	})
	if s := e.ec.Agent.State(); s.Sessions != 1 {
		t.Errorf("%d sessions: the renewal should not need a reconnect", s.Sessions)
	}
	now, _ := os.ReadFile(e.credsFile)
	newCert, _ := pki.ParseCertsPEM(now)
	t.Logf("rotated at %.0f%% of the first certificate's life; %d pods created meanwhile, all delivered",
		100*pki.LifetimeUsed(firstCert[0], newCert[0].NotBefore.Add(time.Minute)), len(created))
	// Once the first certificate has expired, a reconnect works.
	time.Sleep(time.Until(firstCert[0].NotAfter.Add(time.Second)))
	e.link.Cut()
	eventually(t, 10*time.Second, "edge sees the cut", func() (bool, error) { return !e.ec.Agent.State().Connected, nil })
	e.link.Heal()
	eventually(t, 20*time.Second, "edge reconnects with the renewed certificate", func() (bool, error) {
		return e.ec.Agent.State().Connected, nil
	})
}

// A certificate that expired while the node was offline is renewed within
// the grace period; past it, the node is told to join again.
func TestExpiredCertificateRenewal(t *testing.T) {
	c := startCloud(t) // grace: the default 90 days
	e := startEdge(t, c, "e2e-expired")
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	e.stop()
	creds, err := os.ReadFile(e.credsFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKeyPEM(creds)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := pki.ParseCertsPEM(creds)
	_, id, err := pki.NodeIdentity(certs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Offline for a while: its certificate expired an hour ago.
	writeExpired(t, c.cc.CA, e, key, id, time.Now().Add(-time.Hour))
	e.start()
	eventually(t, 30*time.Second, "edge back with a renewed certificate", func() (bool, error) {
		return e.ec.Agent.State().Connected, nil
	})
	b, _ := os.ReadFile(e.credsFile)
	renewed, _ := pki.ParseCertsPEM(b)
	if !renewed[0].NotAfter.After(time.Now()) {
		t.Fatalf("the certificate was not renewed: not after %s", renewed[0].NotAfter)
	}
	e.stop()
	// Offline for longer than the grace period.
	writeExpired(t, c.cc.CA, e, key, id, time.Now().Add(-91*24*time.Hour))
	cr, err := credentials.Load(e.credsFile, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.cc.CA.Cert)
	err = cr.RenewExpired(t.Context(), "https://"+c.addr, roots)
	if err == nil || !strings.Contains(err.Error(), "grace period") || !strings.Contains(err.Error(), "join this node again") {
		t.Fatalf("renewal past the grace period: %v", err)
	}
}

// writeExpired writes credentials for e whose certificate expired at
// notAfter, signed by ca for the same key and identity.
func writeExpired(t *testing.T, ca *pki.CA, e *edge, key *ecdsa.PrivateKey, id string, notAfter time.Time) {
	t.Helper()
	u, _ := url.Parse(pki.NodeIDScheme + ":" + id)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: pki.NodeCNPrefix + e.name, Organization: []string{pki.NodeOrganization}},
		NotBefore:    notAfter.Add(-24 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := credentials.Encode(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.credsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two cloudcores started at the same moment against a cluster without a CA
// end with one CA, and both serve the same edges.
func TestOneCAForTwoCloudcores(t *testing.T) {
	secret := "tether-ca-e2e-race"
	t.Cleanup(func() {
		client.CoreV1().Secrets("tether-system").Delete(context.Background(), secret, metav1.DeleteOptions{})
	})
	tweak := func(cfg *cloudcore.Config) { cfg.CASecret = secret }
	// Two New calls at the same moment: each finds no CA and creates one.
	var (
		wg   sync.WaitGroup
		cas  [2]*pki.CA
		errs [2]error
	)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := cloudcore.Config{Kubeconfig: cp.Kubeconfig(), ListenAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0",
				Logger: testLogger(t)}
			tweak(&cfg)
			cc, err := cloudcore.New(cfg)
			if err == nil {
				cas[i] = cc.CA
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("cloudcore.New: %v, %v", errs[0], errs[1])
	}
	if !cas[0].Cert.Equal(cas[1].Cert) {
		t.Fatal("two cloudcores started together made two CAs")
	}
	a, b := startCloudWith(t, tweak), startCloudWith(t, tweak)
	if !a.cc.CA.Cert.Equal(cas[0].Cert) || !b.cc.CA.Cert.Equal(cas[0].Cert) {
		t.Fatal("a cloudcore started later has another CA")
	}
	// An edge joined through a is served by b.
	e := newEdge(t, a, "e2e-two-clouds")
	e.link = newCutLink(t, b.addr)
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	if len(b.cc.Hub.Connected()) != 1 {
		t.Fatalf("b serves %v", b.cc.Hub.Connected())
	}
}

// A hub serving certificate that expires is renewed and reloaded without a
// restart; edges reconnect by themselves.
func TestServingCertificateRenewed(t *testing.T) {
	c := startCloudWith(t, func(cfg *cloudcore.Config) {
		cfg.ServingCertValidity = metav1.Duration{Duration: 6 * time.Second}
	})
	e := startEdge(t, c, "e2e-serving")
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	first := c.cc.Serving()
	time.Sleep(time.Until(first.NotAfter.Add(time.Second)))
	if now := c.cc.Serving(); now.SerialNumber.Cmp(first.SerialNumber) == 0 || !now.NotAfter.After(time.Now()) {
		t.Fatalf("serving certificate not renewed: %s until %s", now.SerialNumber, now.NotAfter)
	}
	e.link.Cut()
	eventually(t, 10*time.Second, "edge sees the cut", func() (bool, error) { return !e.ec.Agent.State().Connected, nil })
	e.link.Heal()
	eventually(t, 20*time.Second, "edge reconnects to the renewed certificate", func() (bool, error) {
		return e.ec.Agent.State().Connected, nil
	})
	// Restarted with other names: the certificate has them (an expired or
	// outdated one is never reused), and the edge comes back by itself.
	c.stop()
	c.tweak = func(cfg *cloudcore.Config) {
		cfg.ServingCertValidity = metav1.Duration{Duration: time.Hour}
		cfg.CertDNSNames = []string{"hub.renamed.example"}
	}
	c.start(nil)
	if names := c.cc.Serving().DNSNames; !slices.Contains(names, "hub.renamed.example") {
		t.Fatalf("names after a restart with new ones: %v", names)
	}
	eventually(t, 30*time.Second, "edge reconnects to the restarted hub", func() (bool, error) {
		return e.ec.Agent.State().Connected && e.ec.Agent.State().Sessions >= 3, nil
	})
}

// dialHub opens a tunnel session to c with a certificate and says Hello as
// node; the error says why it was refused.
func dialHub(t *testing.T, c *cloud, certPEM []byte, key *ecdsa.PrivateKey, node string) (*websocket.Conn, error) {
	t.Helper()
	pair, err := pki.TLSPair(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.cc.CA.Cert)
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{*pair}},
		HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.DialContext(t.Context(), "wss://"+c.addr+hub.Path, nil)
	if err != nil {
		if resp != nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			return nil, errors.New(resp.Status + ": " + string(body[:n]))
		}
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	send(t, ws, &protocol.Frame{Hello: &protocol.Hello{ProtocolVersion: protocol.Version, MinVersion: 1, NodeName: node}})
	if f := recv(t, ws); f.Error != nil {
		return nil, f.Error
	}
	return ws, nil
}
