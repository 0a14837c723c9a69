package pki

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// A join token as printed by `cloudcore token create` and given to
// `edgecore join`: "<id>.<secret>.<pin>", where <id>.<secret> is the
// Kubernetes bootstrap token (6 and 16 characters of [a-z0-9]) that the hub
// checks, and <pin> is the 64 hex digits of Hash of the CA bundle, which the
// edge checks before it sends the secret anywhere.
var bootstrapRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

// FormatJoinToken makes the join token of a bootstrap token and a CA pin
// ("sha256:<hex>").
func FormatJoinToken(bootstrap, pin string) string {
	return bootstrap + "." + strings.TrimPrefix(pin, "sha256:")
}

// ParseJoinToken splits a join token into its bootstrap token and its CA
// pin ("sha256:<hex>"). Errors never repeat the token.
func ParseJoinToken(s string) (bootstrap, pin string, err error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 3 {
		return "", "", fmt.Errorf("join token: want <id>.<secret>.<ca hash> (three parts separated by dots), got %d parts", len(parts))
	}
	bootstrap = parts[0] + "." + parts[1]
	if err := ValidateBootstrapToken(bootstrap); err != nil {
		return "", "", err
	}
	if b, err := hex.DecodeString(parts[2]); err != nil || len(b) != 32 {
		return "", "", fmt.Errorf("join token: the CA hash must be 64 hex digits")
	}
	return bootstrap, "sha256:" + strings.ToLower(parts[2]), nil
}

// ValidateBootstrapToken checks the shape of "<id>.<secret>".
func ValidateBootstrapToken(s string) error {
	if !bootstrapRE.MatchString(s) {
		return fmt.Errorf("join token: the token part must be 6 and 16 characters of [a-z0-9] separated by a dot")
	}
	return nil
}
