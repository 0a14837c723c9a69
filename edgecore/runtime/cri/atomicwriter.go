package cri

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// fileProjection is one file of a configMap, secret, projected or
// downwardAPI volume.
type fileProjection struct {
	data []byte
	mode os.FileMode
}

const (
	dataLink    = "..data"
	dataLinkTmp = "..data_tmp"
)

// writeAtomic makes dir hold exactly payload (paths relative to dir), the
// way the kubelet's AtomicWriter does, so a container reading the volume
// sees either the old or the new set of files, never a mix:
//
//	dir/..2024_01_02_15_04_05.123456/<files>   the data, one dir per version
//	dir/..data -> ..2024_01_02_15_04_05.123456  swapped by rename(2)
//	dir/<top-level name> -> ..data/<top-level name>
//
// It writes nothing when the current version already matches. gid, if not
// -1, becomes the files' group (the pod's fsGroup). It reports whether a new
// version was written.
func writeAtomic(dir string, payload map[string]fileProjection, gid int) (bool, error) {
	for p := range payload {
		if err := validatePayloadPath(p); err != nil {
			return false, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	oldTs, _ := os.Readlink(filepath.Join(dir, dataLink))
	oldTop := map[string]bool{}
	if oldTs != "" {
		same, top, err := sameContent(filepath.Join(dir, oldTs), payload)
		if err != nil {
			return false, err
		}
		oldTop = top
		if same {
			return false, ensureUserLinks(dir, payload, oldTop)
		}
	}
	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, err
	}
	for p, f := range payload {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(full, f.data, f.mode.Perm()); err != nil {
			return false, err
		}
		// WriteFile's mode is masked by the umask.
		if err := os.Chmod(full, f.mode.Perm()); err != nil {
			return false, err
		}
		if gid >= 0 {
			if err := os.Lchown(full, -1, gid); err != nil {
				return false, err
			}
		}
	}
	tmp := filepath.Join(dir, dataLinkTmp)
	os.Remove(tmp)
	if err := os.Symlink(filepath.Base(tsDir), tmp); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return false, err
	}
	if err := ensureUserLinks(dir, payload, oldTop); err != nil {
		return true, err
	}
	if oldTs != "" && oldTs != filepath.Base(tsDir) {
		if err := os.RemoveAll(filepath.Join(dir, oldTs)); err != nil {
			return true, err
		}
	}
	return true, nil
}

func validatePayloadPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty file path")
	case filepath.IsAbs(p):
		return fmt.Errorf("file path %q is absolute", p)
	case strings.HasPrefix(p, ".."):
		return fmt.Errorf("file path %q starts with '..'", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return fmt.Errorf("file path %q contains '..'", p)
		}
	}
	return nil
}

// sameContent reports whether tsDir holds exactly payload, and the
// top-level names it holds.
func sameContent(tsDir string, payload map[string]fileProjection) (bool, map[string]bool, error) {
	top := map[string]bool{}
	same := true
	seen := 0
	err := filepath.WalkDir(tsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tsDir, path)
		if rel == "." {
			return nil
		}
		if !strings.Contains(rel, "/") {
			top[rel] = true
		}
		if d.IsDir() {
			return nil
		}
		f, ok := payload[rel]
		if !ok {
			same = false
			return nil
		}
		seen++
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm() != f.mode.Perm() {
			same = false
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(b, f.data) {
			same = false
		}
		return nil
	})
	if os.IsNotExist(err) {
		return false, top, nil
	}
	return same && seen == len(payload), top, err
}

// ensureUserLinks makes dir/<name> -> ..data/<name> for each top-level name
// of payload and removes the links of names no longer in it.
func ensureUserLinks(dir string, payload map[string]fileProjection, oldTop map[string]bool) error {
	newTop := map[string]bool{}
	for p := range payload {
		newTop[strings.SplitN(p, "/", 2)[0]] = true
	}
	for name := range newTop {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataLink, name), link); err != nil {
			return err
		}
	}
	for name := range oldTop {
		if newTop[name] {
			continue
		}
		link := filepath.Join(dir, name)
		if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if err := os.Remove(link); err != nil {
				return err
			}
		}
	}
	return nil
}
