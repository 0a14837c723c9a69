//go:build integration

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
	"github.com/tether-edge/tether/testimages"
)

// The node conformance run: Kubernetes' own e2e suite (bin/e2e.test, built
// by hack/conformance-binaries.sh from the k8s.io/kubernetes version the
// control plane comes from) against one edge node, the only node of the
// cluster, its pods in the private containerd.
//
// TestNodeConformance runs ciConformanceFocus, a subset of a few minutes,
// in make test-integration, so that a regression in kubelet behaviour fails
// the build; make conformance sets TETHER_CONFORMANCE_FOCUS to the whole
// [NodeConformance] set. Specs are skipped by the Makefile's
// CONFORMANCE_SKIP list, each with its reason there.
//
// Environment:
//
//	TETHER_CONFORMANCE_FOCUS  the ginkgo focus (default ciConformanceFocus)
//	TETHER_CONFORMANCE_NODES  ginkgo's parallel processes (default 4)
//	TETHER_CONFORMANCE_OUT    where junit.xml and summary.txt go (default
//	                          <repo>/conformance/out)

// ciConformanceFocus is the CI subset (about a minute of specs): pods and
// their status, the container runtime, init containers, environment
// (configmap, secret, downward API, services, expansion), configmap,
// secret, downward API, projected and emptyDir volumes, /etc/hosts,
// readiness gates, admission.
const ciConformanceFocus = `\[sig-node\] (Pods should (get a host IP|be submitted and removed|be updated|allow activeDeadlineSeconds to be updated|contain environment variables for services|support pod readiness gates)` +
	`|Container Runtime blackbox test on terminated container` +
	`|Containers should use the image defaults` +
	`|Downward API should provide (pod name, namespace and IP address|host IP|container's limits.cpu/memory and requests.cpu/memory as env vars)` +
	`|ConfigMap should be consumable via environment variable` +
	`|Secrets should be consumable from pods in env vars` +
	`|Variable Expansion should allow composing env vars` +
	`|Kubelet when scheduling an agnhost Pod with hostAliases` +
	`|PodOSRejection` +
	`|InitContainer \[NodeConformance\] should (invoke init containers on a RestartNever pod|not start app containers if init containers fail on a RestartAlways pod))` +
	`|\[sig-storage\] (ConfigMap should be consumable from pods in volume \[NodeConformance\]` +
	`|Secrets should be consumable from pods in volume \[NodeConformance\]` +
	`|Projected combined` +
	`|EmptyDir volumes should support \(non-root,0644,tmpfs\)` +
	`|Downward API volume should (provide podname only|update labels on modification))`

// conformanceImages are the suite's images (e2e.test --list-images), built
// here: the names it asks for, so no --kube-test-repo-list is needed.
const (
	agnhostImage    = "registry.k8s.io/e2e-test-images/agnhost:2.52"
	busyboxImage    = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
	pauseImage      = "registry.k8s.io/pause:3.10"
	nonewprivsImage = "registry.k8s.io/e2e-test-images/nonewprivs:1.3"
	nonrootImage    = "registry.k8s.io/e2e-test-images/nonroot:1.4"
	nginxImage      = "registry.k8s.io/e2e-test-images/nginx:1.14-4"
	// privateImage is the image of the private registry specs
	// (imageutils.AuthenticatedAlpine), pulled with the credentials of
	// the spec's image pull secret; busybox here.
	privateImage = "gcr.io/authenticated-image-pulling/alpine:3.7"
)

func TestNodeConformance(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin")
	for _, p := range []string{"e2e.test", "ginkgo", "agnhost", "nnp"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			t.Fatalf("%v: run hack/conformance-binaries.sh (make conformance-binaries) first", err)
		}
	}
	focus := os.Getenv("TETHER_CONFORMANCE_FOCUS")
	if focus == "" {
		focus = ciConformanceFocus
	}
	nodes := 4
	if s := os.Getenv("TETHER_CONFORMANCE_NODES"); s != "" {
		if nodes, err = strconv.Atoi(s); err != nil || nodes < 1 {
			t.Fatalf("TETHER_CONFORMANCE_NODES=%q: want a positive number", s)
		}
	}
	out := os.Getenv("TETHER_CONFORMANCE_OUT")
	if out == "" {
		out = filepath.Join(root, "conformance", "out")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	skips, err := conformanceSkips(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	ctd := containerd(t)
	images := conformanceImages(t, bin)
	importConformanceImages(t, ctd, images)
	serveConformanceImages(t, ctd, bin, images)
	blackholeServices(t)

	// The edge must be the cluster's only node: the nodes that the tests
	// before this one left in the API server (their edges are stopped) go.
	existing, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range existing.Items {
		if err := client.CoreV1().Nodes().Delete(t.Context(), n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}

	c := startStreamCloud(t, nil)
	e := newCRIEdge(t, c, "conformance-edge")
	// The kubelet's own back-off (10s doubling to 5 min), which the
	// suite's restart specs expect, not the e2e tests' short one.
	e.cri.BackoffInitial.Duration, e.cri.BackoffMax.Duration = 0, 0
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, time.Minute)

	junit := filepath.Join(out, "junit.xml")
	os.Remove(junit)
	args := []string{"--nodes=" + strconv.Itoa(nodes), "--no-color", "--timeout=3h",
		"--output-dir=" + out, "--junit-report=junit.xml",
		"--focus=" + focus}
	if len(skips) > 0 {
		args = append(args, "--skip="+strings.Join(skips, "|"))
	}
	args = append(args, filepath.Join(bin, "e2e.test"), "--",
		"--kubeconfig="+cp.Kubeconfig(), "--provider=skeleton",
		"--report-dir="+out, "--disable-log-dump", "--minStartupPods=0",
		"--allowed-not-ready-nodes=0", "--node-schedulable-timeout=1m",
		"--dump-logs-on-failure=false", "--e2e-verify-service-account=false")
	log, err := os.Create(filepath.Join(out, "e2e.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	t.Logf("conformance: %s %s (log: %s)", filepath.Join(bin, "ginkgo"), strings.Join(args, " "), log.Name())
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Hour)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "ginkgo"), args...)
	cmd.Stdout, cmd.Stderr = log, log
	runErr := cmd.Run()
	took := time.Since(start).Round(time.Second)

	res, err := readJUnit(junit, focus)
	if err != nil {
		t.Fatalf("conformance: ginkgo: %v; %v (log: %s)", runErr, err, log.Name())
	}
	summary := res.summary(took)
	if err := os.WriteFile(filepath.Join(out, "summary.txt"), []byte(summary), 0o644); err != nil {
		t.Error(err)
	}
	fmt.Print(summary)
	if len(res.failed) > 0 || res.passed == 0 {
		t.Errorf("conformance: %d failed, %d passed (%s, log %s)", len(res.failed), res.passed, junit, log.Name())
	}
}

// The nginx image built for the conformance run behaves as the suite's: it
// serves its welcome page on port 80 of the pod's IP, logs the request to
// the container's output, and runs the /bin/sh -c "sleep 5" of the
// back-off spec.
func TestConformanceImages(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var images []conformanceImage
	for _, img := range conformanceImages(t, filepath.Join(root, "bin")) {
		if img.name == nginxImage {
			images = append(images, img)
		}
	}
	importConformanceImages(t, containerd(t), images)
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-conformance-images")
	e.start()

	web := barePod(ns, "nginx", e.name)
	web.Spec.Containers[0].Image, web.Spec.Containers[0].Command = nginxImage, nil
	web.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	web.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80}}
	web.Spec.Containers[0].ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
		HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(80)}}}
	createPod(t, web)
	sleeper := barePod(ns, "nginx-sh", e.name)
	sleeper.Spec.RestartPolicy = corev1.RestartPolicyNever
	sleeper.Spec.Containers[0].Image = nginxImage
	sleeper.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	sleeper.Spec.Containers[0].Command = []string{"/bin/sh", "-c", "sleep 1", "/crash/missing"}
	createPod(t, sleeper)

	web = waitPod(t, ns, web.Name, 90*time.Second, "Running and Ready", runningAndReady)
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second} // no proxy
	resp, err := hc.Get("http://" + net.JoinHostPort(web.Status.PodIP, "80") + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<title>Welcome to nginx!</title>") ||
		!strings.HasPrefix(resp.Header.Get("Server"), "nginx/") {
		t.Errorf("GET /: %v %s %q: %s", err, resp.Status, resp.Header.Get("Server"), tailString(string(body), 300))
	}
	// The access log is the container's output.
	waitFileHolds(t, e.logFile(web, 0), `"GET / HTTP/1.1" 200`, 20*time.Second)

	waitPod(t, ns, sleeper.Name, 60*time.Second, "Succeeded", func(p *corev1.Pod) (bool, error) {
		return p.Status.Phase == corev1.PodSucceeded, fmt.Errorf("%s", describePod(p))
	})
}

// serveConformanceImages serves the suite's images from a registry on
// loopback (critest.Registry) that containerd reaches through mirrors of
// registry.k8s.io and gcr.io (every other registry stays at NoRegistry's
// closed port), so the image pull specs pull for real over CRI, with no
// name lookup and nothing sent off the machine: registry.k8s.io's images
// are public, as upstream's; privateImage needs the credentials of the
// image pull secret of the spec "should be able to pull from private
// registry with secret", read from the spec's source in the module cache
// (test/e2e/common/node/runtime.go), so that the spec without the secret
// gets a 401. The mirrors go when the test ends (the containerd is shared
// with the tests that run after this one).
func serveConformanceImages(t *testing.T, ctd *critest.Containerd, bin string, images []conformanceImage) {
	t.Helper()
	reg, err := critest.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	for _, img := range images {
		if err := reg.Add(img.name, img.files, img.cfg); err != nil {
			t.Fatal(err)
		}
		if img.name == busyboxImage {
			if err := reg.Add(privateImage, img.files, img.cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	user, pass, err := privateRegistryCredentials(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RequireAuth(privateImage, user, pass); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"registry.k8s.io", "gcr.io"} {
		if err := ctd.Mirror(host, reg.URL); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ctd.Mirror(host, ""); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(func() {
		t.Logf("registry on %s: %d pulls of %s, %d of %s", reg.URL, reg.Pulls(agnhostImage), agnhostImage,
			reg.Pulls(privateImage), privateImage)
	})
}

// privateRegistryCredentials reads the user and password of the image
// pull secret of the suite's private registry spec: the one "auth" of the
// docker config in test/e2e/common/node/runtime.go of the pinned
// k8s.io/kubernetes.
func privateRegistryCredentials(bin string) (user, pass string, err error) {
	kubeDir, err := exec.Command("go", "list", "-modfile", filepath.Join(bin, "..", "tools", "kube", "go.mod"),
		"-m", "-f", "{{.Dir}}", "k8s.io/kubernetes").Output()
	if err != nil {
		return "", "", fmt.Errorf("go list -m k8s.io/kubernetes: %w", err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(kubeDir)), "test", "e2e", "common", "node", "runtime.go"))
	if err != nil {
		return "", "", err
	}
	m := regexp.MustCompile(`(?s)"https://gcr\.io": \{\s*"auth": "([A-Za-z0-9+/=]+)"`).FindAllSubmatch(src, -1)
	if len(m) != 1 {
		return "", "", fmt.Errorf("runtime.go: %d gcr.io auth entries, want 1", len(m))
	}
	b, err := base64.StdEncoding.DecodeString(string(m[0][1]))
	if err != nil {
		return "", "", fmt.Errorf("runtime.go: auth: %w", err)
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok || user == "" || pass == "" {
		return "", "", errors.New("runtime.go: auth is not user:password")
	}
	return user, pass, nil
}

// conformanceSkips reads the Makefile's skip list: one
// `CONFORMANCE_SKIP += <regexp> # reason` line per entry; the regexps'
// spaces are written as dots (make splits on spaces).
func conformanceSkips(makefile string) ([]string, error) {
	f, err := os.Open(makefile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	line := regexp.MustCompile(`^CONFORMANCE_SKIP \+= (\S+)\s+# \S`)
	var skips []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "CONFORMANCE_SKIP") {
			continue
		}
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			return nil, fmt.Errorf("%s: %q: want CONFORMANCE_SKIP += <regexp> # <reason>", makefile, sc.Text())
		}
		if _, err := regexp.Compile(m[1]); err != nil {
			return nil, fmt.Errorf("%s: %w", makefile, err)
		}
		skips = append(skips, m[1])
	}
	return skips, sc.Err()
}

// conformanceImage is one of the suite's images, built here.
type conformanceImage struct {
	name  string
	files []testimages.File
	cfg   testimages.Config
}

// importConformanceImages imports the images into containerd under the
// names the suite asks for.
func importConformanceImages(t *testing.T, ctd *critest.Containerd, images []conformanceImage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	for _, img := range images {
		if err := ctd.ImportImageConfig(ctx, img.name, img.files, img.cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// conformanceImages builds the suite's images from the programs in bin
// and this machine's Debian packages. agnhost's image has busybox's tools
// beside /agnhost (the real one is Alpine with /agnhost), nonewprivs the
// setuid nnp program, nonroot runs as user 1234, nginx is Debian's nginx
// (nginxFiles).
func conformanceImages(t *testing.T, bin string) []conformanceImage {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	busybox, err := busyboxFiles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(bin, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pause, err := testimages.PauseProgram(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	with := func(extra ...testimages.File) []testimages.File {
		return append(append([]testimages.File{}, busybox...), extra...)
	}
	agnhost := read("agnhost")
	// The suite's network specs run curl in the agnhost container.
	agnhostExtra, err := hostProgram("/usr/bin/curl", "usr/bin/curl")
	if err != nil {
		t.Fatal(err)
	}
	// and OpenBSD's nc (nc -u), in place of busybox's.
	nc, err := hostProgram("/bin/nc.openbsd", "usr/bin/nc")
	if err != nil {
		t.Fatal(err)
	}
	agnhostExtra = append(agnhostExtra, nc...)
	// Its shell is bash, as the real image has one: busybox's sh runs its
	// own nc applet whatever PATH says.
	bash, err := os.ReadFile("/bin/bash-static")
	if err != nil {
		t.Fatalf("%v (make deps installs bash-static)", err)
	}
	agnhostExtra = append(agnhostExtra, testimages.File{Path: "bin/bash", Mode: 0o755, Data: bash},
		testimages.File{Path: "bin/sh", Mode: fs.ModeSymlink | 0o777, Link: "/bin/bash"})
	// agnhost netexec serves HTTPS with the image's /localhost.crt and
	// /localhost.key (test/images/agnhost/porter, in the module cache).
	kubeDir, err := exec.Command("go", "list", "-modfile", filepath.Join(bin, "..", "tools", "kube", "go.mod"),
		"-m", "-f", "{{.Dir}}", "k8s.io/kubernetes").Output()
	if err != nil {
		t.Fatalf("go list -m k8s.io/kubernetes: %v", err)
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(kubeDir)), "test", "images", "agnhost", "porter", f))
		if err != nil {
			t.Fatal(err)
		}
		agnhostExtra = append(agnhostExtra, testimages.File{Path: f, Mode: 0o644, Data: b})
	}
	nginx, err := nginxFiles(busybox)
	if err != nil {
		t.Fatal(err)
	}
	return []conformanceImage{
		// busybox's sh, as the suite's: a spec expects its exact message
		// ("/bin/sh: can't create /file: Read-only file system").
		{busyboxImage, with(), testimages.Config{Cmd: []string{"sh"}, Env: env}},
		{agnhostImage, with(append(agnhostExtra,
			testimages.File{Path: "agnhost", Mode: 0o755, Data: agnhost},
			testimages.File{Path: "agnhost-2", Mode: fs.ModeSymlink | 0o777, Link: "agnhost"},
			testimages.File{Path: "uploads", Mode: fs.ModeDir | 0o777})...,
		), testimages.Config{Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"}, Env: env}},
		{pauseImage, []testimages.File{{Path: "pause", Mode: 0o755, Data: pause}},
			testimages.Config{Entrypoint: []string{"/pause"}}},
		{nonewprivsImage, with(testimages.File{Path: "usr/local/bin/nnp", Mode: fs.ModeSetuid | 0o755, Data: read("nnp")}),
			testimages.Config{Cmd: []string{"nnp"}, Env: env}},
		{nonrootImage, with(), testimages.Config{Cmd: []string{"sh"}, Env: env, User: "1234"}},
		{nginxImage, nginx, testimages.Config{Cmd: []string{"nginx", "-g", "daemon off;"}, Env: env}},
	}
}

// nginxConf and nginxSite are the configuration of the upstream image
// (nginx:1.14-alpine, which test/images/nginx mirrors): worker processes
// as user nginx, the access log and error log to the container's stdout
// and stderr, /usr/share/nginx/html served on port 80.
const (
	nginxConf = `user nginx;
worker_processes 1;
error_log /var/log/nginx/error.log warn;
pid /var/run/nginx.pid;
events {
    worker_connections 1024;
}
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                    '$status $body_bytes_sent "$http_referer" '
                    '"$http_user_agent" "$http_x_forwarded_for"';
    access_log /var/log/nginx/access.log main;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}
`
	nginxSite = `server {
    listen 80;
    server_name localhost;
    location / {
        root /usr/share/nginx/html;
        index index.html index.htm;
    }
}
`
)

// nginxFiles is the nginx image's layer, as upstream's: busybox's shell
// and tools (the suite runs /bin/sh in it; upstream's is Alpine's
// busybox), Debian's /usr/sbin/nginx with its shared libraries, the
// configuration of nginxConf and nginxSite, Debian's mime.types and
// welcome page, and the user nginx (101, as upstream's).
func nginxFiles(busybox []testimages.File) ([]testimages.File, error) {
	var files []testimages.File
	for _, f := range busybox {
		if f.Path != "etc/passwd" && f.Path != "etc/group" {
			files = append(files, f)
		}
	}
	prog, err := hostProgram("/usr/sbin/nginx", "usr/sbin/nginx")
	if err != nil {
		return nil, fmt.Errorf("%w (make deps installs nginx)", err)
	}
	files = append(files, prog...)
	for _, f := range []struct{ from, to string }{
		{"/etc/nginx/mime.types", "etc/nginx/mime.types"},
		{"/usr/share/nginx/html/index.html", "usr/share/nginx/html/index.html"},
	} {
		b, err := os.ReadFile(f.from)
		if err != nil {
			return nil, fmt.Errorf("%w (make deps installs nginx)", err)
		}
		files = append(files, testimages.File{Path: f.to, Mode: 0o644, Data: b})
	}
	return append(files,
		testimages.File{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\n" +
			"nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		testimages.File{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnginx:x:101:nginx\nnobody:x:65534:\n")},
		testimages.File{Path: "etc/nginx/nginx.conf", Mode: 0o644, Data: []byte(nginxConf)},
		testimages.File{Path: "etc/nginx/conf.d/default.conf", Mode: 0o644, Data: []byte(nginxSite)},
		// Debian's nginx keeps its temporary files under /var/lib/nginx
		// (it makes the directories below at start).
		testimages.File{Path: "var/lib/nginx", Mode: fs.ModeDir | 0o755},
		testimages.File{Path: "var/run", Mode: fs.ModeDir | 0o755},
		testimages.File{Path: "var/log/nginx/access.log", Mode: fs.ModeSymlink | 0o777, Link: "/dev/stdout"},
		testimages.File{Path: "var/log/nginx/error.log", Mode: fs.ModeSymlink | 0o777, Link: "/dev/stderr"},
	), nil
}

// hostProgram is a dynamically linked program of this machine, at as in the
// image, with the shared libraries and loader it needs (ldd) at their paths.
func hostProgram(path, as string) ([]testimages.File, error) {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w (make deps installs curl and netcat-openbsd)", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	files := []testimages.File{{Path: as, Mode: 0o755, Data: b}}
	var paths []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			paths = append(paths, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			paths = append(paths, f[0])
		}
	}
	for _, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return nil, err
		}
		files = append(files, testimages.File{Path: strings.TrimPrefix(p, "/"), Mode: 0o755, Data: b})
	}
	return files, nil
}

// busyboxFiles is the busybox image's file list, with every applet in /bin
// too, as the suite's busybox image has them (its sysctl specs run
// /bin/sysctl; Debian's busybox installs it in /sbin).
func busyboxFiles(ctx context.Context) ([]testimages.File, error) {
	files, err := testimages.BusyboxFiles(ctx)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, f := range files {
		have[strings.TrimPrefix(f.Path, "/")] = true
	}
	for _, f := range files {
		if f.Mode&fs.ModeSymlink == 0 {
			continue
		}
		if p := "bin/" + filepath.Base(f.Path); !have[p] {
			have[p] = true
			files = append(files, testimages.File{Path: p, Mode: fs.ModeSymlink | 0o777, Link: "/bin/busybox"})
		}
	}
	return files, nil
}

// junitResult counts the specs of a ginkgo JUnit report that the focus
// selects: the specs outside it are in the report too, as skipped.
type junitResult struct {
	passed, skipped int
	failed          []string // name: first line of the failure
	skippedBy       map[string]int
}

// labelsSuffix is the list of ginkgo labels that ends a JUnit test name
// (" [sig-node, NodeConformance, Conformance]").
var labelsSuffix = regexp.MustCompile(` \[[^\]]*, [^\]]*\]$`)

func readJUnit(path, focus string) (*junitResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Suites []struct {
			Cases []struct {
				Name    string `xml:"name,attr"`
				Status  string `xml:"status,attr"`
				Skipped *struct {
					Message string `xml:"message,attr"`
				} `xml:"skipped"`
				Failure *struct {
					Message string `xml:"message,attr"`
					Text    string `xml:",chardata"`
				} `xml:"failure"`
				Error *struct {
					Message string `xml:"message,attr"`
				} `xml:"error"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	re, err := regexp.Compile(focus)
	if err != nil {
		return nil, err
	}
	r := &junitResult{skippedBy: map[string]int{}}
	for _, s := range doc.Suites {
		for _, c := range s.Cases {
			name := labelsSuffix.ReplaceAllString(strings.TrimPrefix(c.Name, "[It] "), "")
			suiteNode := strings.HasPrefix(c.Name, "[SynchronizedBeforeSuite]") || strings.HasPrefix(c.Name, "[BeforeSuite]") ||
				strings.HasPrefix(c.Name, "[SynchronizedAfterSuite]") || strings.HasPrefix(c.Name, "[AfterSuite]") ||
				strings.HasPrefix(c.Name, "[ReportAfterSuite]") || strings.HasPrefix(c.Name, "[DeferCleanup (Suite)]")
			switch {
			case c.Failure != nil || c.Error != nil:
				msg := ""
				if c.Failure != nil {
					msg = c.Failure.Message
				} else {
					msg = c.Error.Message
				}
				msg, _, _ = strings.Cut(strings.TrimSpace(msg), "\n")
				r.failed = append(r.failed, name+": "+msg)
			case suiteNode || !re.MatchString(name):
			case c.Skipped != nil:
				r.skipped++
				msg, _, _ := strings.Cut(strings.TrimSpace(c.Skipped.Message), "\n")
				r.skippedBy[msg]++
			default:
				r.passed++
			}
		}
	}
	return r, nil
}

func (r *junitResult) summary(took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "conformance: %d passed, %d failed, %d skipped in %s\n", r.passed, len(r.failed), r.skipped, took)
	sort.Strings(r.failed)
	for _, f := range r.failed {
		fmt.Fprintf(&b, "  FAIL %s\n", f)
	}
	var why []string
	for m, n := range r.skippedBy {
		why = append(why, fmt.Sprintf("  skipped %3d: %s", n, m))
	}
	sort.Strings(why)
	for _, w := range why {
		b.WriteString(w + "\n")
	}
	return b.String()
}
