// Package staticpods reads pods from a manifest directory on the edge
// machine, as the kubelet's static pods: they run whether or not the node
// ever reached the cloud, and the cloud shows them as mirror pods. The
// directory is watched with fsnotify; a bad manifest is reported and skipped
// without disturbing the others.
package staticpods

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Annotations the kubelet puts on static pods; Tether uses the same.
const (
	ConfigHashAnnotation   = "kubernetes.io/config.hash"
	ConfigSourceAnnotation = "kubernetes.io/config.source"
	// MirrorAnnotation marks a mirror pod in the API server.
	MirrorAnnotation = corev1.MirrorPodAnnotationKey
)

// Source holds the static pods of one directory.
type Source struct {
	dir  string
	node string
	log  *slog.Logger
	// changed is called after the set of pods changed.
	changed func()
	// bad is called for a manifest that cannot be used.
	bad func(file string, err error)

	mu sync.Mutex
	// pods by file, guarded by mu.
	pods map[string]*corev1.Pod
	// errs remembers the bad files already reported, guarded by mu.
	errs map[string]string
}

// New returns a Source for dir. changed and bad must not block.
func New(dir, node string, changed func(), bad func(file string, err error), log *slog.Logger) *Source {
	return &Source{dir: dir, node: node, log: log, changed: changed, bad: bad,
		pods: map[string]*corev1.Pod{}, errs: map[string]string{}}
}

// Pods returns the current static pods, sorted by name. Callers must not
// modify them.
func (s *Source) Pods() []*corev1.Pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Scan reads the directory once. Start calls it; tests may too.
func (s *Source) Scan() {
	entries, err := os.ReadDir(s.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("read static pod directory", slog.String("dir", s.dir), slog.Any("err", err))
		return
	}
	pods := map[string]*corev1.Pod{}
	errs := map[string]string{}
	names := map[string]string{} // pod name -> file, to refuse duplicates
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".yaml") ||
			strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json")) {
			continue
		}
		path := filepath.Join(s.dir, name)
		p, err := Read(path, s.node)
		if err == nil {
			if other, dup := names[p.Namespace+"/"+p.Name]; dup {
				err = fmt.Errorf("pod %s/%s is also defined in %s", p.Namespace, p.Name, other)
			}
		}
		if err != nil {
			errs[path] = err.Error()
			continue
		}
		names[p.Namespace+"/"+p.Name] = path
		pods[path] = p
	}
	s.mu.Lock()
	changed := !samePods(s.pods, pods)
	var report []string
	for f, msg := range errs {
		if s.errs[f] != msg {
			report = append(report, f)
		}
	}
	s.pods, s.errs = pods, errs
	s.mu.Unlock()
	sort.Strings(report)
	for _, f := range report {
		s.log.Warn("bad static pod manifest", slog.String("file", f), slog.String("err", errs[f]))
		s.bad(f, errors.New(errs[f]))
	}
	if changed {
		s.log.Info("static pods changed", slog.Int("pods", len(pods)))
		s.changed()
	}
}

func samePods(a, b map[string]*corev1.Pod) bool {
	if len(a) != len(b) {
		return false
	}
	for f, p := range a {
		if q, ok := b[f]; !ok || q.UID != p.UID {
			return false
		}
	}
	return true
}

// Start scans the directory and then watches it until ctx ends. A missing
// directory is watched for once it appears, by polling its parent.
func (s *Source) Start(ctx context.Context) error {
	s.Scan()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("static pods: %w", err)
	}
	defer w.Close()
	watching := false
	poll := time.NewTicker(10 * time.Second)
	defer poll.Stop()
	var debounce <-chan time.Time
	for {
		if !watching {
			if err := w.Add(s.dir); err == nil {
				watching = true
				s.Scan()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Name == s.dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				watching = false
			}
			debounce = time.After(100 * time.Millisecond)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.log.Warn("static pod watch", slog.Any("err", err))
		case <-debounce:
			debounce = nil
			s.Scan()
		case <-poll.C:
			// Catches what a watch can miss (an overflow, a directory made
			// after start).
			s.Scan()
		}
	}
}

// Read parses one manifest into the static pod the node runs: the name gets
// the node's name as a suffix, the UID is a hash of the manifest and the
// node, and the kubelet's config annotations are set.
func Read(path, node string) (*corev1.Pod, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := parse(b, node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return p, nil
}

// parse is Read of the manifest b.
func parse(b []byte, node string) (*corev1.Pod, error) {
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, err
	}
	if p.Kind != "Pod" || p.APIVersion != "v1" {
		return nil, fmt.Errorf("apiVersion %q kind %q, want v1 Pod", p.APIVersion, p.Kind)
	}
	if err := validate(&p, node); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append(append([]byte(node), 0), b...))
	hash := hex.EncodeToString(sum[:16])
	if p.Namespace == "" {
		p.Namespace = metav1.NamespaceDefault
	}
	p.Name = p.Name + "-" + node
	p.UID = types.UID(hash)
	p.Spec.NodeName = node
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[ConfigHashAnnotation] = hash
	p.Annotations[ConfigSourceAnnotation] = "file"
	defaults(&p)
	return &p, nil
}

// validate checks a manifest's pod before Read names it for node. The name
// with the node's suffix must still be a valid name, and the namespace a
// valid one: both go into the pod's log directory and its mirror pod.
func validate(p *corev1.Pod, node string) error {
	if p.Name == "" {
		return errors.New("metadata.name is empty")
	}
	if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q: %s", p.Name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(p.Name + "-" + node); len(errs) > 0 {
		return fmt.Errorf("metadata.name %q (with the node's suffix -%s): %s", p.Name, node, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(p.Namespace); p.Namespace != "" && len(errs) > 0 {
		return fmt.Errorf("metadata.namespace %q: %s", p.Namespace, strings.Join(errs, "; "))
	}
	if len(p.Spec.Containers) == 0 {
		return errors.New("spec.containers: at least one container is required")
	}
	seen := map[string]bool{}
	all := append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	for i, c := range all {
		if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
			return fmt.Errorf("container %d: name %q: %s", i, c.Name, strings.Join(errs, "; "))
		}
		if seen[c.Name] {
			return fmt.Errorf("container name %q is used twice", c.Name)
		}
		seen[c.Name] = true
		if c.Image == "" {
			return fmt.Errorf("container %q: image is empty", c.Name)
		}
	}
	for _, v := range p.Spec.Volumes {
		if v.Secret != nil || v.ConfigMap != nil || v.Projected != nil {
			return fmt.Errorf("volume %q: static pods may not use secrets, configmaps or projected volumes", v.Name)
		}
	}
	return nil
}

// defaults fills what the API server would default and the runtime needs.
func defaults(p *corev1.Pod) {
	if p.Spec.RestartPolicy == "" {
		p.Spec.RestartPolicy = corev1.RestartPolicyAlways
	}
	if p.Spec.TerminationGracePeriodSeconds == nil {
		g := int64(corev1.DefaultTerminationGracePeriodSeconds)
		p.Spec.TerminationGracePeriodSeconds = &g
	}
	if p.Spec.DNSPolicy == "" {
		p.Spec.DNSPolicy = corev1.DNSClusterFirst
	}
	if p.Spec.SchedulerName == "" {
		p.Spec.SchedulerName = corev1.DefaultSchedulerName
	}
	fill := func(cs []corev1.Container) {
		for i := range cs {
			c := &cs[i]
			if c.ImagePullPolicy == "" {
				c.ImagePullPolicy = corev1.PullIfNotPresent
				if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
					c.ImagePullPolicy = corev1.PullAlways
				}
			}
			if c.TerminationMessagePath == "" {
				c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			}
			if c.TerminationMessagePolicy == "" {
				c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			}
		}
	}
	fill(p.Spec.InitContainers)
	fill(p.Spec.Containers)
	// The kubelet lets static pods tolerate every NoExecute taint.
	p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Operator: corev1.TolerationOpExists,
		Effect: corev1.TaintEffectNoExecute})
}
