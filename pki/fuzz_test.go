package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"
)

const (
	fuzzBootstrap = "abc123.0123456789abcdef"
	fuzzHex       = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

// tokenErrorText is every error text the token parsers have, whatever the
// input: a secret that is a piece of it is not a leak.
var tokenErrorText = func() string {
	var b strings.Builder
	for _, s := range []string{"", "a", "a.b", "a.b.c", "a.b.c.d", "abc123.x", "abc123.ABCDEFGHIJKLMNOP",
		"ABC123.0123456789abcdef", "abc123.0123456789abcdef.x", "a/c123.0123456789abcdef"} {
		for _, parse := range []func(string) (string, string, error){ParseJoinToken, ParseBootstrapToken} {
			if _, _, err := parse(s); err != nil {
				b.WriteString(err.Error() + "\n")
			}
		}
	}
	return b.String()
}()

// secretOf returns the part of a token where the secret is (the second part
// separated by dots), if it is long enough that finding it in an error
// cannot be chance.
func secretOf(s string) string {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) < 2 || len(parts[1]) < 8 || strings.Contains(tokenErrorText, parts[1]) {
		return ""
	}
	return parts[1]
}

// FuzzParseJoinToken checks the join and bootstrap token parsers: an
// accepted join token formats back (JoinToken) to the input, but for blanks
// around it and the case of the pin; an accepted bootstrap token is
// "<id>.<secret>"; errors wrap ErrMalformedToken and never hold the secret.
func FuzzParseJoinToken(f *testing.F) {
	for _, s := range []string{
		JoinToken(fuzzBootstrap, "sha256:"+fuzzHex), fuzzBootstrap, " " + fuzzBootstrap + "." + strings.ToUpper(fuzzHex) + "\n",
		"abc123.0123456789ABCDEF." + fuzzHex, "abc123..0123456789abcdef", "abc123.0123456789abcdef." + fuzzHex + ".x", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		secret := secretOf(s)
		bootstrap, pin, err := ParseJoinToken(s)
		if err != nil {
			if !strings.Contains(err.Error(), ErrMalformedToken.Error()) {
				t.Fatalf("ParseJoinToken: error does not wrap ErrMalformedToken: %v", err)
			}
			if secret != "" && strings.Contains(err.Error(), secret) {
				t.Fatalf("ParseJoinToken: error %q holds the secret %q", err, secret)
			}
		} else {
			trimmed := strings.TrimSpace(s)
			i := strings.LastIndexByte(trimmed, '.')
			if got, want := JoinToken(bootstrap, pin), trimmed[:i]+strings.ToLower(trimmed[i:]); got != want {
				t.Fatalf("JoinToken(ParseJoinToken(%q)) = %q, want %q", s, got, want)
			}
			if b2, p2, err := ParseJoinToken(JoinToken(bootstrap, pin)); err != nil || b2 != bootstrap || p2 != pin {
				t.Fatalf("ParseJoinToken(JoinToken(%q, %q)) = %q, %q, %v", bootstrap, pin, b2, p2, err)
			}
			if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+64 || pin != strings.ToLower(pin) {
				t.Fatalf("pin %q", pin)
			}
			if _, _, err := ParseBootstrapToken(bootstrap); err != nil {
				t.Fatalf("the bootstrap part %q of an accepted join token: %v", bootstrap, err)
			}
		}
		id, sec, err := ParseBootstrapToken(s)
		if err != nil {
			if !strings.Contains(err.Error(), ErrMalformedToken.Error()) {
				t.Fatalf("ParseBootstrapToken: error does not wrap ErrMalformedToken: %v", err)
			}
			if secret != "" && strings.Contains(err.Error(), secret) {
				t.Fatalf("ParseBootstrapToken: error %q holds the secret %q", err, secret)
			}
			return
		}
		if id+"."+sec != strings.TrimSpace(s) || len(id) != BootstrapIDLen || len(sec) != BootstrapSecretLen {
			t.Fatalf("ParseBootstrapToken(%q) = %q, %q", s, id, sec)
		}
	})
}

func fuzzKey(f *testing.F) *ecdsa.PrivateKey {
	k, err := NewKey()
	if err != nil {
		f.Fatal(err)
	}
	return k
}

// FuzzParseNodeCSR checks the parser of certificate requests from the
// network: the size limit, and an accepted request holds a P-256 key that
// certificates can be issued to.
func FuzzParseNodeCSR(f *testing.F) {
	csr, err := NodeCSR(fuzzKey(f), "store-0421-pi")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384); err == nil {
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	f.Add(bytes.Replace(csr, []byte("REQUEST"), []byte("REQUESX"), 2))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		pub, err := ParseNodeCSR(in)
		if err != nil {
			return
		}
		if len(in) > MaxCSRSize {
			t.Fatalf("accepted a request of %d bytes", len(in))
		}
		if pub.Curve != elliptic.P256() {
			t.Fatalf("accepted a key on %s", pub.Curve.Params().Name)
		}
		if _, err := x509.MarshalPKIXPublicKey(pub); err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
	})
}

// FuzzParseCertsPEM checks the certificate parser: an accepted bundle has
// certificates whose PEM encoding parses again to the same certificates.
func FuzzParseCertsPEM(f *testing.F) {
	ca, err := NewCA("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	node, err := ca.IssueNode(&fuzzKey(f).PublicKey, "store-0421-pi", "0123456789abcdef", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	key, _ := KeyPEM(fuzzKey(f))
	f.Add(ca.CertPEM())
	f.Add(append(append(node, key...), ca.CertPEM()...))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, err := ParseCertsPEM(in)
		if err != nil {
			return
		}
		if len(certs) == 0 {
			t.Fatal("no certificate and no error")
		}
		var out []byte
		for _, c := range certs {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		again, err := ParseCertsPEM(out)
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded bundle: %d certificates, %v", len(again), err)
		}
		for i := range certs {
			if !certs[i].Equal(again[i]) {
				t.Fatalf("certificate %d changed", i)
			}
		}
		if Hash(certs...) != Hash(again...) {
			t.Fatal("pin changed")
		}
	})
}

// FuzzParseKeyPEM checks the key parser: an accepted key is a valid ECDSA
// key that KeyPEM encodes and ParseKeyPEM reads back equal.
func FuzzParseKeyPEM(f *testing.F) {
	k := fuzzKey(f)
	sec1, _ := KeyPEM(k)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pkcs8 := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	ca, _ := NewCA("fuzz")
	f.Add(sec1)
	f.Add(pkcs8)
	f.Add(append(ca.CertPEM(), sec1...))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		k, err := ParseKeyPEM(in)
		if err != nil {
			return
		}
		if _, err := k.ECDH(); err != nil {
			t.Fatalf("accepted an invalid key: %v", err)
		}
		out, err := KeyPEM(k)
		if err != nil {
			t.Fatalf("accepted key does not encode: %v", err)
		}
		again, err := ParseKeyPEM(out)
		if err != nil || !again.Equal(k) {
			t.Fatalf("re-encoded key: %v", err)
		}
	})
}
