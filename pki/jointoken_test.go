package pki

import (
	"errors"
	"strings"
	"testing"
)

func TestJoinTokenRoundTrip(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	pin := Hash(ca.Cert)
	const bootstrap = "abc123.0123456789abcdef"
	s := JoinToken(bootstrap, pin)
	if want := bootstrap + "." + strings.TrimPrefix(pin, "sha256:"); s != want {
		t.Fatalf("JoinToken = %q, want %q", s, want)
	}
	b, h, err := ParseJoinToken(s)
	if err != nil || b != bootstrap || h != pin {
		t.Fatalf("ParseJoinToken = %q, %q, %v; want %q, %q", b, h, err, bootstrap, pin)
	}
	// Upper-case hex and surrounding blanks (a copy and paste) are accepted.
	if _, h, err := ParseJoinToken(" " + bootstrap + "." + strings.ToUpper(strings.TrimPrefix(pin, "sha256:")) + "\n"); err != nil || h != pin {
		t.Errorf("upper case: %q, %v", h, err)
	}
	id, secret, err := ParseBootstrapToken(bootstrap)
	if err != nil || id != "abc123" || secret != "0123456789abcdef" {
		t.Errorf("ParseBootstrapToken = %q, %q, %v", id, secret, err)
	}
}

func TestParseJoinTokenMalformed(t *testing.T) {
	const (
		id     = "abc123"
		secret = "0123456789abcdef"
	)
	hash := strings.Repeat("0f", 32)
	for _, tc := range []struct {
		name, in, says string
	}{
		{"empty", "", "got 1 part"},
		{"bootstrap only", id + "." + secret, "no CA pin"},
		{"four parts", id + "." + secret + "." + hash + ".x", "got 4 part"},
		{"short id", "abc12." + secret + "." + hash, "id must be 6 characters, got 5"},
		{"upper-case id", "ABC123." + secret + "." + hash, "id must be lower-case"},
		{"long secret", id + "." + secret + "0." + hash, "secret must be 16 characters, got 17"},
		{"secret with a dash", id + ".0123456789abcde-." + hash, "secret must be lower-case"},
		{"short hash", id + "." + secret + "." + hash[2:], "64 hex digits, got 62"},
		{"hash not hex", id + "." + secret + "." + strings.Repeat("g", 64), "64 hex digits"},
		{"hash with its prefix", id + "." + secret + ".sha256:" + hash, "64 hex digits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseJoinToken(tc.in)
			if !errors.Is(err, ErrMalformedToken) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err %v, want ErrMalformedToken saying %q", err, tc.says)
			}
			if strings.Contains(err.Error(), "0123456789abcde") {
				t.Errorf("%q repeats the secret", err)
			}
		})
	}
}

func TestParseBootstrapTokenMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, in, says string
	}{
		{"no dot", "abc1230123456789abcdef", "got 1 part"},
		{"with a pin", "abc123.0123456789abcdef." + strings.Repeat("0", 64), "CA pin"},
		{"short secret", "abc123.0123456789", "secret must be 16 characters, got 10"},
		{"bad id", "abc_23.0123456789abcdef", "id must be lower-case"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseBootstrapToken(tc.in)
			if !errors.Is(err, ErrMalformedToken) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err %v, want ErrMalformedToken saying %q", err, tc.says)
			}
			if strings.Contains(err.Error(), "0123456789") {
				t.Errorf("%q repeats the secret", err)
			}
		})
	}
}
