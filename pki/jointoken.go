package pki

import (
	"errors"
	"fmt"
	"strings"
)

// Join tokens. A bootstrap token is "<id>.<secret>": an id of
// BootstrapIDLen and a secret of BootstrapSecretLen characters a-z and 0-9,
// the shape of a Kubernetes bootstrap token. A join token, the string an
// operator hands to `edgecore join`, appends the pin of the cloud's CA:
// "<id>.<secret>.<hex>", where <hex> is the 64 hex digits of Hash without
// its "sha256:" prefix. The edge checks the hub's CA against the pin before
// it sends the bootstrap token, so a token is never shown to an impostor.
//
// These live here, not in cloudcore/jointoken, because both the cloud and
// the edge parse them and the edge may not import the cloud.
const (
	BootstrapIDLen     = 6
	BootstrapSecretLen = 16
	hashPrefix         = "sha256:"
	hashHexLen         = 64
)

// ErrMalformedToken is wrapped by every error of ParseBootstrapToken and
// ParseJoinToken. The messages say which part is wrong but never repeat the
// input, which holds a secret.
var ErrMalformedToken = errors.New("malformed join token")

// JoinToken returns "<bootstrap>.<hex>" for a bootstrap token "<id>.<secret>"
// and a CA pin "sha256:<hex>" as Hash returns it.
func JoinToken(bootstrap, caHash string) string {
	return bootstrap + "." + strings.TrimPrefix(caHash, hashPrefix)
}

// ParseBootstrapToken splits a bootstrap token "<id>.<secret>" and checks
// the length and characters of both parts.
func ParseBootstrapToken(s string) (id, secret string, err error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	switch {
	case len(parts) == 3:
		return "", "", fmt.Errorf("%w: want <id>.<secret>, got three parts: is it a join token with its CA pin?", ErrMalformedToken)
	case len(parts) != 2:
		return "", "", fmt.Errorf("%w: want <id>.<secret>, got %d part(s) separated by dots", ErrMalformedToken, len(parts))
	}
	if err := checkPart("id", parts[0], BootstrapIDLen); err != nil {
		return "", "", err
	}
	if err := checkPart("secret", parts[1], BootstrapSecretLen); err != nil {
		return "", "", err
	}
	return parts[0], parts[1], nil
}

// ParseJoinToken splits a join token "<id>.<secret>.<hex>" into the
// bootstrap token "<id>.<secret>" and the CA pin in Hash's form,
// "sha256:<hex>" (hex in lower case).
func ParseJoinToken(s string) (bootstrap, caHash string, err error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	switch {
	case len(parts) == 2:
		return "", "", fmt.Errorf("%w: it has no CA pin: want <id>.<secret>.<ca-hash>, as `cloudcore token create` prints it", ErrMalformedToken)
	case len(parts) != 3:
		return "", "", fmt.Errorf("%w: want <id>.<secret>.<ca-hash>, got %d part(s) separated by dots", ErrMalformedToken, len(parts))
	}
	if err := checkPart("id", parts[0], BootstrapIDLen); err != nil {
		return "", "", err
	}
	if err := checkPart("secret", parts[1], BootstrapSecretLen); err != nil {
		return "", "", err
	}
	h := strings.ToLower(parts[2])
	if len(h) != hashHexLen || strings.Trim(h, "0123456789abcdef") != "" {
		return "", "", fmt.Errorf("%w: the CA hash must be %d hex digits, got %d characters", ErrMalformedToken, hashHexLen, len(parts[2]))
	}
	return parts[0] + "." + parts[1], hashPrefix + h, nil
}

// checkPart checks that v is n characters a-z, 0-9. Its error names the part
// and its length, never its value.
func checkPart(name, v string, n int) error {
	if len(v) != n {
		return fmt.Errorf("%w: the %s must be %d characters, got %d", ErrMalformedToken, name, n, len(v))
	}
	if strings.Trim(v, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return fmt.Errorf("%w: the %s must be lower-case letters and digits only", ErrMalformedToken, name)
	}
	return nil
}
