package satoken

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
)

var pod = Pod{Namespace: "store", Name: "pos", UID: "uid-1", ServiceAccount: "reader"}

func issuer(t *testing.T, node string) *Issuer {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	i, err := NewIssuer(node, key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestMintVerify(t *testing.T) {
	i := issuer(t, "edge-1")
	now := time.Unix(1_800_000_000, 0)
	tok, exp, err := i.Mint(pod, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > MaxTokenSize/2 {
		t.Errorf("token of %d bytes", len(tok))
	}
	if !exp.Equal(now.Add(time.Hour)) {
		t.Errorf("expiry %s", exp)
	}
	c, err := i.Verify(tok, now.Add(59*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.Pod != pod || c.Node != "edge-1" || c.User() != "system:serviceaccount:store:reader" {
		t.Errorf("claims %+v", c)
	}
}

// The attacker's tests: every token below is refused.
func TestVerifyRefuses(t *testing.T) {
	i := issuer(t, "edge-1")
	now := time.Unix(1_800_000_000, 0)
	tok, _, err := i.Mint(pod, now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")

	// Another node's token: its own key, its own name.
	other := issuer(t, "edge-2")
	otherTok, _, err := other.Mint(pod, now)
	if err != nil {
		t.Fatal(err)
	}
	// Another node's name under this node's key (a token claiming this node
	// but minted elsewhere cannot exist: this is the check of the claim).
	sameKeyOther, err := NewIssuer("edge-2", i.key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherName, _, err := sameKeyOther.Mint(pod, now)
	if err != nil {
		t.Fatal(err)
	}
	// A forged claim under a valid signature of other content.
	forgedClaims := base64.RawURLEncoding.EncodeToString([]byte(
		`{"iss":"tether-edge:edge-1","sub":"system:serviceaccount:kube-system:admin","aud":["tether-edge-metaserver"],"exp":1900000000,"iat":1800000000,"nbf":1800000000,"kubernetes.io":{"namespace":"kube-system","pod":{"name":"x","uid":"y"},"serviceaccount":{"name":"admin"},"node":{"name":"edge-1"}}}`))
	// alg none and HS256 with the public key as secret (the classic JWT
	// confusions).
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none"}`))
	hs := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256"}`))
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 1

	for name, c := range map[string]struct {
		tok string
		at  time.Time
		exp error
	}{
		"expired":           {tok, now.Add(time.Hour + Leeway + time.Second), ErrExpired},
		"not yet valid":     {tok, now.Add(-time.Hour), ErrInvalid},
		"other node":        {otherTok, now, ErrInvalid},
		"other node name":   {otherName, now, ErrInvalid},
		"forged claims":     {parts[0] + "." + forgedClaims + "." + parts[2], now, ErrInvalid},
		"flipped signature": {parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig), now, ErrInvalid},
		"alg none":          {none + "." + parts[1] + ".", now, ErrInvalid},
		"alg HS256":         {hs + "." + parts[1] + "." + parts[2], now, ErrInvalid},
		"oversized":         {strings.Repeat("a", MaxTokenSize+1), now, ErrTooLarge},
		"garbage":           {"not.a.token", now, ErrInvalid},
		"empty":             {"", now, ErrInvalid},
		"two parts":         {parts[0] + "." + parts[1], now, ErrInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := i.Verify(c.tok, c.at)
			if !errors.Is(err, c.exp) {
				t.Fatalf("Verify = %v, want %v", err, c.exp)
			}
		})
	}
}

func TestLoadKeepsCredentials(t *testing.T) {
	dir := t.TempDir()
	a, err := Load(dir, "edge-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, _, err := a.Issuer.Mint(pod, now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(dir, "edge-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Issuer.Verify(tok, now); err != nil {
		t.Errorf("a token of before the restart: %v", err)
	}
	if !a.CA.Cert.Equal(b.CA.Cert) {
		t.Error("the pod CA changed across a restart")
	}
	certPEM, _, err := b.ServingCert(net.ParseIP("10.0.0.7"), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.CA.Cert)
	for _, name := range []string{"10.0.0.7", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.0.0.8"}); err == nil {
		t.Error("the serving certificate covers another IP")
	}
	// A corrupt key is an error, not a silent new key (that would revoke
	// every token without a word).
	if err := pki.WriteFileSync(dir+"/"+KeyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "edge-1", 0); err == nil {
		t.Error("a corrupt key loaded")
	}
}
