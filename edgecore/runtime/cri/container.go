package cri

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The kubelet's default masked and read-only paths for unprivileged
// containers; containerd applies none unless asked.
var (
	defaultMaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap"}
	defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// containerHash identifies what of a container's spec may change while the
// pod lives: its image (the API server allows no other change that needs a
// new container). A container whose hash differs is replaced. Hashing the
// whole spec would restart every container when an upgrade of k8s.io/api
// adds a field.
func containerHash(c *corev1.Container) string {
	s := sha256.Sum256([]byte(c.Image))
	return hex.EncodeToString(s[:8])
}

// containerConfig builds the CRI config of one attempt of c.
func (s *podSync) containerConfig(c *corev1.Container, attempt uint32, image string) (*runtimeapi.ContainerConfig, error) {
	pod := s.pod
	vars, err := s.env.containerEnv(c)
	if err != nil {
		return nil, err
	}
	envs := make([]*runtimeapi.KeyValue, 0, len(vars))
	values := map[string]string{}
	for _, v := range vars {
		envs = append(envs, &runtimeapi.KeyValue{Key: v.name, Value: v.value})
		values[v.name] = v.value
	}
	lookup := func(n string) (string, bool) { v, ok := values[n]; return v, ok }
	expandAll := func(in []string) []string {
		var out []string
		for _, a := range in {
			out = append(out, expand(a, lookup))
		}
		return out
	}
	mounts, err := s.mounts(c)
	if err != nil {
		return nil, err
	}
	if m, err := s.etcHostsMount(c); err != nil {
		return nil, err
	} else if m != nil {
		mounts = append(mounts, m)
	}
	annotations := map[string]string{
		annotationHash:         containerHash(c),
		annotationRestartCount: strconv.FormatUint(uint64(attempt), 10),
		annotationGrace:        strconv.FormatInt(int64(podGrace(pod).Seconds()), 10),
	}
	if c.TerminationMessagePath != "" {
		host, err := s.r.terminationFile(pod, c.Name, attempt)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, &runtimeapi.Mount{ContainerPath: c.TerminationMessagePath, HostPath: host})
		annotations[annotationTermMsgPath] = c.TerminationMessagePath
		annotations[annotationTermMsgHostPath] = host
	}
	sc, err := s.securityContext(c)
	if err != nil {
		return nil, err
	}
	s.targetNamespace(c.Name, sc.NamespaceOptions)
	cfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: attempt},
		Image:      &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: c.Image},
		Command:    expandAll(c.Command),
		Args:       expandAll(c.Args),
		WorkingDir: c.WorkingDir,
		Envs:       envs,
		Mounts:     mounts,
		Labels: map[string]string{
			labelPodUID: string(pod.UID), labelPodName: pod.Name, labelPodNamespace: pod.Namespace,
			labelContainerName: c.Name, labelManaged: managedBy, labelNode: s.r.cfg.NodeName,
		},
		Annotations: annotations,
		LogPath:     filepath.Join(c.Name, strconv.FormatUint(uint64(attempt), 10)+".log"),
		Stdin:       c.Stdin,
		StdinOnce:   c.StdinOnce,
		Tty:         c.TTY,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources:       s.r.resources(pod, c),
			SecurityContext: sc,
		},
	}
	if err := os.MkdirAll(filepath.Join(s.r.podLogDir(pod), c.Name), 0o755); err != nil {
		return nil, err
	}
	return cfg, nil
}

// mounts maps c's volumeMounts to host paths. A volume that is not ready
// makes the container wait.
func (s *podSync) mounts(c *corev1.Container) ([]*runtimeapi.Mount, error) {
	var out []*runtimeapi.Mount
	for _, vm := range c.VolumeMounts {
		host, ok := s.vols[vm.Name]
		if !ok {
			if err := s.volErrs[vm.Name]; err != nil {
				return nil, &volumeError{msg: fmt.Sprintf("volume %q: %v", vm.Name, err), volume: vm.Name, err: err}
			}
			return nil, configErrorf("volume %q is not defined", vm.Name)
		}
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			sub := vm.SubPath
			if vm.SubPathExpr != "" {
				vars, err := s.env.containerEnv(c)
				if err != nil {
					return nil, err
				}
				values := map[string]string{}
				for _, v := range vars {
					values[v.name] = v.value
				}
				sub = expand(vm.SubPathExpr, func(n string) (string, bool) { v, ok := values[n]; return v, ok })
			}
			if err := validatePayloadPath(sub); err != nil {
				return nil, configErrorf("volumeMount %s subPath: %v", vm.Name, err)
			}
			p := filepath.Join(host, sub)
			if _, err := os.Lstat(p); os.IsNotExist(err) {
				if err := os.MkdirAll(p, 0o755); err != nil {
					return nil, err
				}
			}
			// A configMap key is a symlink into ..data: mount what it points
			// to (it will not follow later updates, as in Kubernetes).
			resolved, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil, err
			}
			base, err := filepath.EvalSymlinks(host)
			if err != nil {
				return nil, err
			}
			if resolved != base && !strings.HasPrefix(resolved, base+"/") {
				return nil, configErrorf("volumeMount %s subPath %q leaves the volume", vm.Name, sub)
			}
			host = resolved
		}
		m := &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: vm.ReadOnly}
		if vm.MountPropagation != nil {
			switch *vm.MountPropagation {
			case corev1.MountPropagationHostToContainer:
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
			case corev1.MountPropagationBidirectional:
				m.Propagation = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// volumeError is a volume that is not ready; the container waits in
// ContainerCreating, as with the kubelet.
type volumeError struct {
	msg string
	// volume and err say which volume could not be set up and why.
	volume string
	err    error
}

func (e *volumeError) Error() string { return e.msg }

// terminationFile makes the host file mounted at the container's
// terminationMessagePath.
func (r *Runtime) terminationFile(pod *corev1.Pod, name string, attempt uint32) (string, error) {
	dir := filepath.Join(r.podDir(string(pod.UID)), "containers", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, strconv.FormatUint(uint64(attempt), 10))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o666)
	if err != nil {
		return "", err
	}
	f.Close()
	return p, os.Chmod(p, 0o666)
}

// securityContext merges the pod's and the container's security contexts.
func (s *podSync) securityContext(c *corev1.Container) (*runtimeapi.LinuxContainerSecurityContext, error) {
	pod := s.pod
	out := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: namespaceOptions(pod)}
	var runAsNonRoot *bool
	var seccomp *corev1.SeccompProfile
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			out.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
		}
		if psc.RunAsGroup != nil {
			out.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
		}
		out.SupplementalGroups = supplementalGroups(psc)
		runAsNonRoot, seccomp = psc.RunAsNonRoot, psc.SeccompProfile
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			out.RunAsUser = &runtimeapi.Int64Value{Value: *csc.RunAsUser}
		}
		if csc.RunAsGroup != nil {
			out.RunAsGroup = &runtimeapi.Int64Value{Value: *csc.RunAsGroup}
		}
		if csc.RunAsNonRoot != nil {
			runAsNonRoot = csc.RunAsNonRoot
		}
		if csc.SeccompProfile != nil {
			seccomp = csc.SeccompProfile
		}
		out.Privileged = csc.Privileged != nil && *csc.Privileged
		out.ReadonlyRootfs = csc.ReadOnlyRootFilesystem != nil && *csc.ReadOnlyRootFilesystem
		out.NoNewPrivs = csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation
		if caps := csc.Capabilities; caps != nil {
			out.Capabilities = &runtimeapi.Capability{}
			for _, a := range caps.Add {
				out.Capabilities.AddCapabilities = append(out.Capabilities.AddCapabilities, string(a))
			}
			for _, d := range caps.Drop {
				out.Capabilities.DropCapabilities = append(out.Capabilities.DropCapabilities, string(d))
			}
		}
	}
	if !out.Privileged {
		out.MaskedPaths, out.ReadonlyPaths = defaultMaskedPaths, defaultReadonlyPaths
	}
	if seccomp != nil {
		switch seccomp.Type {
		case corev1.SeccompProfileTypeRuntimeDefault:
			out.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		case corev1.SeccompProfileTypeLocalhost:
			if seccomp.LocalhostProfile != nil {
				out.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost,
					LocalhostRef: *seccomp.LocalhostProfile}
			}
		}
	}
	if runAsNonRoot != nil && *runAsNonRoot {
		if out.RunAsUser != nil && out.RunAsUser.Value == 0 {
			return nil, configErrorf("container's runAsUser breaks non-root policy")
		}
		if out.RunAsUser == nil && s.imageUser[c.Name] == 0 {
			return nil, configErrorf("container has runAsNonRoot and image will run as root")
		}
	}
	return out, nil
}

// resources maps the container's requests and limits to cgroup settings as
// the kubelet does (cpu shares from the request, CFS quota from the limit,
// memory limit, OOM score by QoS class).
func (r *Runtime) resources(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	cpuReq := c.Resources.Requests.Cpu().MilliValue()
	cpuLim := c.Resources.Limits.Cpu().MilliValue()
	if cpuReq == 0 && cpuLim > 0 {
		cpuReq = cpuLim
	}
	out.CpuShares = max(cpuReq*1024/1000, 2)
	if cpuLim > 0 {
		out.CpuPeriod = 100000
		out.CpuQuota = max(cpuLim*100000/1000, 1000)
	}
	out.MemoryLimitInBytes = c.Resources.Limits.Memory().Value()
	switch qos(pod) {
	case corev1.PodQOSGuaranteed:
		out.OomScoreAdj = -997
	case corev1.PodQOSBestEffort:
		out.OomScoreAdj = 1000
	default:
		adj := int64(1000)
		if total := r.nodeMem.Value(); total > 0 {
			adj = 1000 - 1000*c.Resources.Requests.Memory().Value()/total
		}
		out.OomScoreAdj = min(max(adj, 2), 999)
	}
	return out
}

// qos is the pod's QoS class.
func qos(pod *corev1.Pod) corev1.PodQOSClass {
	requests, limits := false, false
	guaranteed := true
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			requests = requests || len(c.Resources.Requests) > 0
			limits = limits || len(c.Resources.Limits) > 0
			for _, n := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				l, ok := c.Resources.Limits[n]
				if !ok {
					guaranteed = false
					continue
				}
				if r, ok := c.Resources.Requests[n]; ok && r.Cmp(l) != 0 {
					guaranteed = false
				}
			}
		}
	}
	switch {
	case !requests && !limits:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// etcHostsMount writes the pod's kubelet-managed hosts file
// (<pod dir>/etc-hosts) and mounts it at the container's /etc/hosts, as the
// kubelet does, unless the container mounts a volume there or the pod has
// no address yet. A pod on the host's network gets the node's /etc/hosts
// under its own header; both end with the pod's hostAliases.
func (s *podSync) etcHostsMount(c *corev1.Container) (*runtimeapi.Mount, error) {
	for _, vm := range c.VolumeMounts {
		if path.Clean(vm.MountPath) == "/etc/hosts" {
			return nil, nil
		}
	}
	ip, ips := s.podIPs()
	if ip == "" {
		return nil, nil
	}
	var b bytes.Buffer
	if s.pod.Spec.HostNetwork {
		node, err := os.ReadFile("/etc/hosts")
		if err != nil {
			return nil, fmt.Errorf("hosts file: %w", err)
		}
		b.WriteString("# Kubernetes-managed hosts file (host network).\n")
		b.Write(node)
	} else {
		b.WriteString(managedHostsHeader)
		b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
			"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
		host := podHostname(s.pod)
		for _, a := range ips {
			if sub := s.pod.Spec.Subdomain; sub != "" {
				fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", a, host, sub, s.pod.Namespace, s.r.cfg.ClusterDomain, host)
			} else {
				fmt.Fprintf(&b, "%s\t%s\n", a, host)
			}
		}
	}
	if len(s.pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range s.pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	dir := s.r.podDir(string(s.pod.UID))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	file := filepath.Join(dir, "etc-hosts")
	if old, err := os.ReadFile(file); err != nil || !bytes.Equal(old, b.Bytes()) {
		if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("hosts file: %w", err)
		}
	}
	return &runtimeapi.Mount{ContainerPath: "/etc/hosts", HostPath: file}, nil
}

// managedHostsHeader starts the hosts file the kubelet writes for a pod
// (the conformance suite looks for it).
const managedHostsHeader = "# Kubernetes-managed hosts file.\n"
