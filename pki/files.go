package pki

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteFileSync writes b to path atomically and durably: a temporary file in
// the same directory is written, synced and renamed over path, and the
// directory is synced, so that after a power loss path holds either the old
// or the new content, never a torn or empty file.
func WriteFileSync(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename, nothing to remove
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: open dir: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync dir: %w", path, err)
	}
	return nil
}

// RandomSecret is 256 random bits, base64url without padding: a password
// or a bearer token.
func RandomSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// SecretFile returns the secret kept in path, or makes one (RandomSecret)
// and writes it there (WriteFileSync, mode 0600) when the file is missing
// or holds fewer than minLen characters. The directory is made, or set,
// mode 0700, and an existing file mode 0600, so that only its owner reads
// it. The file stays across restarts, so that the processes given it keep
// working.
func SecretFile(path string, minLen int) (string, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("secret %s: %w", path, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("secret %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("secret %s: %w", path, err)
		}
		if s := strings.TrimSpace(string(b)); len(s) >= max(minLen, 1) {
			return s, nil
		}
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("secret %s: %w", path, err)
	}
	s, err := RandomSecret()
	if err != nil {
		return "", err
	}
	if err := WriteFileSync(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}
