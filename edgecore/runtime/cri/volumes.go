package cri

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/edgecore/satoken"
)

// podDir is where a pod's volumes and termination message files live.
func (r *Runtime) podDir(uid string) string { return filepath.Join(r.cfg.RootDir, "pods", uid) }

func (r *Runtime) volumeDir(uid, name string) string {
	return filepath.Join(r.podDir(uid), "volumes", name)
}

// volumes prepares the pod's volumes: it returns the host path of each
// volume that is ready and the error of each that is not. configMap, secret,
// projected and downwardAPI volumes are rewritten atomically when their
// content changed.
func (r *Runtime) volumes(env *podEnv, ps *podState) (map[string]string, map[string]error) {
	pod := env.pod
	paths := map[string]string{}
	errs := map[string]error{}
	gid := -1
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		gid = int(*sc.FSGroup)
	}
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		dir := r.volumeDir(string(pod.UID), v.Name)
		var err error
		switch {
		case v.EmptyDir != nil:
			err = r.emptyDir(dir, v.EmptyDir, gid)
		case v.HostPath != nil:
			dir, err = hostPath(v.HostPath)
		case v.ConfigMap != nil:
			err = r.projectVolume(env, ps, v.Name, dir, false, gid, func() (map[string]fileProjection, error) {
				return env.configMapPayload(v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
			})
		case v.Secret != nil:
			err = r.projectVolume(env, ps, v.Name, dir, true, gid, func() (map[string]fileProjection, error) {
				return env.secretPayload(v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
			})
		case v.DownwardAPI != nil:
			err = r.projectVolume(env, ps, v.Name, dir, false, gid, func() (map[string]fileProjection, error) {
				return env.downwardPayload(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
			})
		case v.Projected != nil:
			secret := false
			for _, s := range v.Projected.Sources {
				secret = secret || s.Secret != nil || s.ServiceAccountToken != nil && r.cfg.InCluster != nil
			}
			err = r.projectVolume(env, ps, v.Name, dir, secret, gid, func() (map[string]fileProjection, error) {
				return r.projectedPayload(env, ps, v.Name, v.Projected)
			})
		default:
			err = fmt.Errorf("volume type not supported at the edge (emptyDir, hostPath, configMap, secret, projected, downwardAPI are)")
		}
		if err != nil {
			errs[v.Name] = err
			continue
		}
		paths[v.Name] = dir
	}
	return paths, errs
}

func (r *Runtime) emptyDir(dir string, ed *corev1.EmptyDirVolumeSource, gid int) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if ed.Medium == corev1.StorageMediumMemory {
		opts := "mode=0777"
		if ed.SizeLimit != nil && !ed.SizeLimit.IsZero() {
			opts += fmt.Sprintf(",size=%d", ed.SizeLimit.Value())
		}
		if err := mountTmpfs(dir, opts); err != nil {
			return err
		}
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	if gid >= 0 {
		if err := os.Chown(dir, -1, gid); err != nil {
			return err
		}
		return os.Chmod(dir, 0o777|os.ModeSetgid)
	}
	return nil
}

// mountTmpfs mounts a tmpfs on dir unless one is mounted there already.
func mountTmpfs(dir, opts string) error {
	if isMountPoint(dir) {
		return nil
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

// isMountPoint reports whether dir is on another device than its parent.
func isMountPoint(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

func hostPath(hp *corev1.HostPathVolumeSource) (string, error) {
	p := filepath.Clean(hp.Path)
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("hostPath %q is not absolute", hp.Path)
	}
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(p)
	exists := err == nil
	if err != nil && !os.IsNotExist(err) {
		return "", err
	}
	switch t {
	case corev1.HostPathUnset:
	case corev1.HostPathDirectoryOrCreate:
		if !exists {
			return p, os.MkdirAll(p, 0o755)
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("hostPath %s is not a directory", p)
		}
	case corev1.HostPathDirectory:
		if !exists || !fi.IsDir() {
			return "", fmt.Errorf("hostPath %s is not a directory", p)
		}
	case corev1.HostPathFileOrCreate:
		if !exists {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", err
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
			if err != nil {
				return "", err
			}
			return p, f.Close()
		}
		if fi.IsDir() {
			return "", fmt.Errorf("hostPath %s is a directory, not a file", p)
		}
	case corev1.HostPathFile:
		if !exists || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("hostPath %s is not a file", p)
		}
	case corev1.HostPathSocket:
		if !exists || fi.Mode()&os.ModeSocket == 0 {
			return "", fmt.Errorf("hostPath %s is not a socket", p)
		}
	case corev1.HostPathCharDev:
		if !exists || fi.Mode()&os.ModeCharDevice == 0 {
			return "", fmt.Errorf("hostPath %s is not a character device", p)
		}
	case corev1.HostPathBlockDev:
		if !exists || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
			return "", fmt.Errorf("hostPath %s is not a block device", p)
		}
	default:
		return "", fmt.Errorf("hostPath type %q is not supported", t)
	}
	return p, nil
}

// projectVolume writes the payload into dir atomically; secret volumes live
// on a tmpfs so their data never reaches the disk.
func (r *Runtime) projectVolume(env *podEnv, ps *podState, name, dir string, secret bool, gid int,
	payload func() (map[string]fileProjection, error)) error {
	files, err := payload()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if secret {
		if err := mountTmpfs(dir, "mode=0755"); err != nil {
			return err
		}
	}
	changed, err := writeAtomic(dir, files, gid)
	if err != nil {
		return fmt.Errorf("write volume: %w", err)
	}
	if changed && ps.volumesWritten[name] {
		r.log.Info("volume updated", slog.String("pod", env.pod.Namespace+"/"+env.pod.Name), slog.String("volume", name))
	}
	ps.volumesWritten[name] = true
	return nil
}

func mode(m *int32, def int32) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return os.FileMode(def)
}

const defaultVolumeMode = 0o644

func (e *podEnv) configMapPayload(name string, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]fileProjection, error) {
	cm, err := e.configMap(name, optional)
	if err != nil || cm == nil {
		return map[string]fileProjection{}, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyPayload("configmap", name, data, items, mode(defMode, defaultVolumeMode), optional)
}

func (e *podEnv) secretPayload(name string, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]fileProjection, error) {
	s, err := e.secret(name, optional)
	if err != nil || s == nil {
		return map[string]fileProjection{}, err
	}
	return keyPayload("secret", name, s.Data, items, mode(defMode, defaultVolumeMode), optional)
}

func keyPayload(kind, name string, data map[string][]byte, items []corev1.KeyToPath, def os.FileMode, optional *bool) (map[string]fileProjection, error) {
	out := map[string]fileProjection{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = fileProjection{data: v, mode: def}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, configErrorf("%s %q has no key %q", kind, name, it.Key)
		}
		out[it.Path] = fileProjection{data: v, mode: mode(it.Mode, int32(def))}
	}
	return out, nil
}

func (e *podEnv) downwardPayload(items []corev1.DownwardAPIVolumeFile, defMode *int32) (map[string]fileProjection, error) {
	out := map[string]fileProjection{}
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = e.fieldValue(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := findContainer(e.pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return nil, configErrorf("downwardAPI %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName)
			}
			v, err = e.resourceValue(c, it.ResourceFieldRef)
		}
		if err != nil {
			return nil, fmt.Errorf("downwardAPI %s: %w", it.Path, err)
		}
		out[it.Path] = fileProjection{data: []byte(v), mode: mode(it.Mode, int32(mode(defMode, defaultVolumeMode).Perm()))}
	}
	return out, nil
}

// projectedPayload merges the sources. A serviceAccountToken source gets
// the pod's token of the in-cluster API at the edge (Config.InCluster,
// tokenFor), and the kube-root-ca.crt ConfigMap of such a volume (the API
// server's kube-api-access volume) the CA of that API. Without InCluster, or
// for a token of another audience (which only the API server could issue),
// the token is skipped, logged once; in a volume that has one, missing
// ConfigMaps (kube-root-ca.crt) are tolerated too.
func (r *Runtime) projectedPayload(env *podEnv, ps *podState, volume string, pv *corev1.ProjectedVolumeSource) (map[string]fileProjection, error) {
	hasToken := false
	for _, s := range pv.Sources {
		hasToken = hasToken || s.ServiceAccountToken != nil
	}
	ic := r.cfg.InCluster
	defMode := int32(mode(pv.DefaultMode, defaultVolumeMode).Perm())
	out := map[string]fileProjection{}
	merge := func(m map[string]fileProjection) {
		for k, v := range m {
			out[k] = v
		}
	}
	for _, s := range pv.Sources {
		switch {
		case s.ConfigMap != nil:
			if hasToken && ic != nil && s.ConfigMap.Name == "kube-root-ca.crt" {
				for _, it := range s.ConfigMap.Items {
					if it.Key == "ca.crt" {
						out[it.Path] = fileProjection{data: ic.CACert, mode: mode(it.Mode, defMode)}
					}
				}
				if len(s.ConfigMap.Items) == 0 {
					out["ca.crt"] = fileProjection{data: ic.CACert, mode: mode(nil, defMode)}
				}
				continue
			}
			optional := s.ConfigMap.Optional
			if hasToken {
				t := true
				optional = &t
			}
			m, err := env.configMapPayload(s.ConfigMap.Name, s.ConfigMap.Items, &defMode, optional)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.Secret != nil:
			m, err := env.secretPayload(s.Secret.Name, s.Secret.Items, &defMode, s.Secret.Optional)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.DownwardAPI != nil:
			m, err := env.downwardPayload(s.DownwardAPI.Items, &defMode)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.ServiceAccountToken != nil:
			if ic != nil && s.ServiceAccountToken.Audience == "" {
				tok, err := r.tokenFor(env.pod, ps)
				if err != nil {
					return nil, err
				}
				out[s.ServiceAccountToken.Path] = fileProjection{data: []byte(tok), mode: mode(nil, defMode)}
				continue
			}
			if !ps.tokenSkipLogged[volume] {
				ps.tokenSkipLogged[volume] = true
				r.log.Info("skipping serviceAccountToken projection: no token at the edge",
					slog.String("pod", env.pod.Namespace+"/"+env.pod.Name), slog.String("volume", volume),
					slog.String("path", s.ServiceAccountToken.Path),
					slog.String("audience", s.ServiceAccountToken.Audience))
			}
		case s.ClusterTrustBundle != nil:
			return nil, errors.New("clusterTrustBundle projection is not supported at the edge")
		}
	}
	return out, nil
}

// tokenFor returns the pod's token, minted again once 80% of its life has
// passed (as the kubelet renews projected tokens); the volume is rewritten
// when it changed.
func (r *Runtime) tokenFor(p *corev1.Pod, ps *podState) (string, error) {
	now := time.Now()
	if ps.token != "" && now.Before(ps.tokenRenew) {
		return ps.token, nil
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tok, exp, err := r.cfg.InCluster.Tokens.Mint(satoken.Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID),
		ServiceAccount: sa}, now)
	if err != nil {
		return "", fmt.Errorf("service-account token: %w", err)
	}
	ps.token, ps.tokenRenew = tok, now.Add(exp.Sub(now)*4/5)
	return tok, nil
}

// removePodDir unmounts what is mounted below the pod's directory (tmpfs
// volumes) and removes it; found says whether there was one.
func (r *Runtime) removePodDir(uid string) (found bool, err error) {
	dir := r.podDir(uid)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return false, nil
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var points []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				points = append(points, f[4])
			}
		}
		for i := len(points) - 1; i >= 0; i-- {
			if err := syscall.Unmount(points[i], 0); err != nil {
				syscall.Unmount(points[i], syscall.MNT_DETACH)
			}
		}
	}
	return true, os.RemoveAll(dir)
}
