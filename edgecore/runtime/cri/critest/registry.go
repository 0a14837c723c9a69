package critest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tether-edge/tether/testimages"
)

// Registry is a read-only OCI distribution registry on loopback, serving
// images written here (testimages.WriteOCIArchive) as registry.k8s.io
// serves its own: anonymous pulls over plain HTTP, GET and HEAD of
// /v2/, /v2/<repository>/manifests/<tag or digest> and
// /v2/<repository>/blobs/<digest>; no push, no other method, no listing.
// Containerd reaches it through a mirror (Containerd.Mirror), so a pull by
// a registry.k8s.io name is a real pull over the distribution protocol
// with no name lookup and nothing sent off the machine.
//
// Limits: it holds its images in memory; a repository or reference of more
// than 256 bytes, or a path outside /v2/, is 404; it serves one loopback
// listener, with the http.Server's default limits (header size, no
// connection cap: a local process can flood it, as any local port).
type Registry struct {
	// URL is its base, http://127.0.0.1:<port>.
	URL string

	srv *http.Server
	ln  net.Listener

	mu sync.Mutex
	// manifests maps repository → reference (tag or digest) → the
	// manifest or index, with its media type.
	manifests map[string]map[string]blob
	// blobs maps repository → digest → config or layer.
	blobs map[string]map[string]blob
	// pulls counts the manifest requests by repository.
	pulls map[string]int
	// auth holds the basic credentials a private repository needs.
	auth map[string]basicAuth
}

type basicAuth struct{ user, pass string }

type blob struct {
	mediaType, digest string
	data              []byte
}

// StartRegistry starts an empty registry on a free loopback port. Close
// stops it.
func StartRegistry() (*Registry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("critest: registry: %w", err)
	}
	r := &Registry{URL: "http://" + ln.Addr().String(), ln: ln,
		manifests: map[string]map[string]blob{}, blobs: map[string]map[string]blob{}, pulls: map[string]int{},
		auth: map[string]basicAuth{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go r.srv.Serve(ln)
	return r, nil
}

// Close stops the registry.
func (r *Registry) Close() error {
	return r.srv.Close()
}

// Add serves an image under name, a full reference whose registry part
// is dropped ("registry.k8s.io/e2e-test-images/agnhost:2.52" is served as
// repository e2e-test-images/agnhost, tag 2.52): one layer of files with
// the configuration cfg, the same image (same digests) as
// Containerd.ImportImageConfig imports.
func (r *Registry) Add(name string, files []testimages.File, cfg testimages.Config) error {
	repo, tag, err := splitName(name)
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	if err := testimages.WriteOCIArchive(&archive, name, files, cfg); err != nil {
		return fmt.Errorf("critest: registry: %w", err)
	}
	content := map[string][]byte{}
	tr := tar.NewReader(&archive)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("critest: registry: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("critest: registry: %w", err)
		}
		content[h.Name] = b
	}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var index struct {
		MediaType string       `json:"mediaType"`
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(content["index.json"], &index); err != nil {
		return fmt.Errorf("critest: registry: index of %s: %w", name, err)
	}
	get := func(digest string) ([]byte, error) {
		b, ok := content["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
		if !ok {
			return nil, fmt.Errorf("critest: registry: %s: blob %s missing", name, digest)
		}
		return b, nil
	}
	manifests, blobs := map[string]blob{}, map[string]blob{}
	indexBlob := blob{mediaType: index.MediaType, digest: digestOf(content["index.json"]), data: content["index.json"]}
	manifests[tag], manifests[indexBlob.digest] = indexBlob, indexBlob
	for _, m := range index.Manifests {
		data, err := get(m.Digest)
		if err != nil {
			return err
		}
		manifests[m.Digest] = blob{mediaType: m.MediaType, digest: m.Digest, data: data}
		var manifest struct {
			Config descriptor   `json:"config"`
			Layers []descriptor `json:"layers"`
		}
		if err := json.Unmarshal(data, &manifest); err != nil {
			return fmt.Errorf("critest: registry: manifest of %s: %w", name, err)
		}
		for _, d := range append([]descriptor{manifest.Config}, manifest.Layers...) {
			data, err := get(d.Digest)
			if err != nil {
				return err
			}
			blobs[d.Digest] = blob{mediaType: d.MediaType, digest: d.Digest, data: data}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.manifests[repo] == nil {
		r.manifests[repo], r.blobs[repo] = map[string]blob{}, map[string]blob{}
	}
	for k, v := range manifests {
		r.manifests[repo][k] = v
	}
	for k, v := range blobs {
		r.blobs[repo][k] = v
	}
	return nil
}

// RequireAuth makes the repository of name private: a request for its
// manifests or blobs without these basic credentials gets 401 and a Basic
// challenge, as a private registry's. The comparison is in constant time.
func (r *Registry) RequireAuth(name, user, pass string) error {
	repo, _, err := splitName(name)
	if err != nil {
		return err
	}
	if user == "" || pass == "" {
		return errors.New("critest: registry: empty credentials")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.auth[repo] = basicAuth{user, pass}
	return nil
}

// Pulls is the number of manifest requests (HEAD or GET, by tag or
// digest, answered or refused) of the repository of name ("registry.k8s.io/x/y:1" → x/y).
func (r *Registry) Pulls(name string) int {
	repo, _, err := splitName(name)
	if err != nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pulls[repo]
}

// splitName splits a full reference host/repository:tag.
func splitName(name string) (repo, tag string, err error) {
	slash, colon := strings.Index(name, "/"), strings.LastIndex(name, ":")
	if slash < 0 || colon < slash {
		return "", "", fmt.Errorf("critest: registry: %q: want host/repository:tag", name)
	}
	return name[slash+1 : colon], name[colon+1:], nil
}

// ServeHTTP serves the pull half of the distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only registry", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p := req.URL.Path
	if p == "/v2/" || p == "/v2" {
		w.WriteHeader(http.StatusOK)
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		http.NotFound(w, req)
		return
	}
	var (
		repo, ref string
		table     map[string]map[string]blob
		manifest  bool
	)
	if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		repo, ref, table, manifest = rest[:i], rest[i+len("/manifests/"):], r.manifests, true
	} else if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
		repo, ref, table = rest[:i], rest[i+len("/blobs/"):], r.blobs
	}
	if repo == "" || ref == "" || len(repo) > 256 || len(ref) > 256 {
		http.NotFound(w, req)
		return
	}
	r.mu.Lock()
	need, private := r.auth[repo]
	if manifest {
		r.pulls[repo]++
	}
	r.mu.Unlock()
	if private {
		user, pass, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(need.user))&subtle.ConstantTimeCompare([]byte(pass), []byte(need.pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="tether-test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
	}
	r.mu.Lock()
	b, found := table[repo][ref]
	if !found && !manifest && strings.HasPrefix(ref, "sha256:") {
		// A manifest is a blob too, by its digest.
		b, found = r.manifests[repo][ref]
	}
	r.mu.Unlock()
	if !found {
		code := "BLOB_UNKNOWN"
		if manifest {
			code = "MANIFEST_UNKNOWN"
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"%s not found"}]}`, code, code)
		return
	}
	if manifest {
		w.Header().Set("Content-Type", b.mediaType)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Docker-Content-Digest", b.digest)
	w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		w.Write(b.data)
	}
}

// Mirror sends containerd's pulls of images of host (a registry name such
// as registry.k8s.io) to server, a registry on loopback (http://127.0.0.1:
// <port>, as Registry.URL): no name lookup of host, and no other host
// tried (the mirror is the host's only endpoint). Every other registry
// keeps the closed port of NoRegistry, which Mirror needs. An empty server
// removes the mirror.
func (c *Containerd) Mirror(host, server string) error {
	if c.certsDir == "" {
		return errors.New("critest: Mirror needs NoRegistry")
	}
	if host == "" || host == "_default" || strings.ContainsAny(host, `/\"`) || host == "." || host == ".." {
		return fmt.Errorf("critest: mirror: bad registry host %q", host)
	}
	dir := filepath.Join(c.certsDir, host)
	if server == "" {
		return os.RemoveAll(dir)
	}
	u, err := url.Parse(server)
	if err != nil {
		return fmt.Errorf("critest: mirror: %w", err)
	}
	if ip := net.ParseIP(u.Hostname()); u.Scheme != "http" || ip == nil || !ip.IsLoopback() || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("critest: mirror %q: want http://<loopback IP>:<port>", server)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", u.Scheme+"://"+u.Host, u.Scheme+"://"+u.Host)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	return nil
}

func digestOf(b []byte) string {
	return fmt.Sprintf("sha256:%x", sha256.Sum256(b))
}
