package cri

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podLogDir is the pod's log directory, as the kubelet names it.
func (r *Runtime) podLogDir(pod *corev1.Pod) string {
	return filepath.Join(r.cfg.PodLogDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))
}

// sandboxConfig is the pod's sandbox: the same for every sync, but for the
// attempt.
func (r *Runtime) sandboxConfig(pod *corev1.Pod, attempt uint32) *runtimeapi.PodSandboxConfig {
	labels := maps.Clone(pod.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[labelPodUID] = string(pod.UID)
	labels[labelPodName] = pod.Name
	labels[labelPodNamespace] = pod.Namespace
	labels[labelManaged] = managedBy
	labels[labelNode] = r.cfg.NodeName
	annotations := maps.Clone(pod.Annotations)
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[annotationGrace] = strconv.FormatInt(int64(podGrace(pod)/time.Second), 10)
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: pod.Name, Uid: string(pod.UID), Namespace: pod.Namespace, Attempt: attempt},
		LogDirectory: r.podLogDir(pod),
		DnsConfig:    r.dnsConfig(pod),
		Labels:       labels,
		Annotations:  annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: r.podCgroup(string(pod.UID)),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaceOptions(pod),
				Privileged:       anyPrivileged(pod),
			},
		},
	}
	if !pod.Spec.HostNetwork {
		cfg.Hostname = podHostname(pod)
	}
	if sc := pod.Spec.SecurityContext; sc != nil {
		lsc := cfg.Linux.SecurityContext
		if sc.RunAsUser != nil {
			lsc.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
		}
		if sc.RunAsGroup != nil {
			lsc.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
		}
		lsc.SupplementalGroups = supplementalGroups(sc)
		if len(sc.Sysctls) > 0 {
			cfg.Linux.Sysctls = map[string]string{}
			for _, s := range sc.Sysctls {
				cfg.Linux.Sysctls[sysctlDots(s.Name)] = s.Value
			}
		}
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 || pod.Spec.HostNetwork {
				continue
			}
			proto := runtimeapi.Protocol_TCP
			switch p.Protocol {
			case corev1.ProtocolUDP:
				proto = runtimeapi.Protocol_UDP
			case corev1.ProtocolSCTP:
				proto = runtimeapi.Protocol_SCTP
			}
			cfg.PortMappings = append(cfg.PortMappings, &runtimeapi.PortMapping{Protocol: proto,
				ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP})
		}
	}
	return cfg
}

// podHostname is the pod's hostname: spec.hostname or its name, cut to a
// DNS label.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

func namespaceOptions(pod *corev1.Pod) *runtimeapi.NamespaceOption {
	ns := &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD,
		Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD}
	if pod.Spec.HostNetwork {
		ns.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostIPC {
		ns.Ipc = runtimeapi.NamespaceMode_NODE
	}
	switch {
	case pod.Spec.HostPID:
		ns.Pid = runtimeapi.NamespaceMode_NODE
	case pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace:
		ns.Pid = runtimeapi.NamespaceMode_POD
	}
	return ns
}

func anyPrivileged(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
				return true
			}
		}
	}
	return false
}

func supplementalGroups(sc *corev1.PodSecurityContext) []int64 {
	var g []int64
	if sc.FSGroup != nil {
		g = append(g, *sc.FSGroup)
	}
	return append(g, sc.SupplementalGroups...)
}

// dnsConfig follows the pod's dnsPolicy. Without ClusterDNS configured,
// ClusterFirst behaves as Default (the node's resolv.conf, which containerd
// copies when the config is nil).
func (r *Runtime) dnsConfig(pod *corev1.Pod) *runtimeapi.DNSConfig {
	var dns *runtimeapi.DNSConfig
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	if pod.Spec.HostNetwork && policy == corev1.DNSClusterFirst {
		policy = corev1.DNSDefault
	}
	switch policy {
	case corev1.DNSNone:
		dns = &runtimeapi.DNSConfig{}
	case corev1.DNSClusterFirst, corev1.DNSClusterFirstWithHostNet:
		if len(r.cfg.ClusterDNS) > 0 {
			d := r.cfg.ClusterDomain
			dns = &runtimeapi.DNSConfig{Servers: r.cfg.ClusterDNS,
				Searches: []string{pod.Namespace + ".svc." + d, "svc." + d, d},
				Options:  []string{"ndots:5"}}
		}
	}
	if pc := pod.Spec.DNSConfig; pc != nil {
		if dns == nil {
			dns = hostDNS()
		}
		dns.Servers = append(dns.Servers, pc.Nameservers...)
		dns.Searches = append(dns.Searches, pc.Searches...)
		for _, o := range pc.Options {
			if o.Value != nil {
				dns.Options = append(dns.Options, o.Name+":"+*o.Value)
			} else {
				dns.Options = append(dns.Options, o.Name)
			}
		}
	}
	return dns
}

// hostDNS reads the node's /etc/resolv.conf.
func hostDNS() *runtimeapi.DNSConfig {
	dns := &runtimeapi.DNSConfig{}
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return dns
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			dns.Servers = append(dns.Servers, f[1])
		case "search":
			dns.Searches = append(dns.Searches, f[1:]...)
		case "options":
			dns.Options = append(dns.Options, f[1:]...)
		}
	}
	return dns
}

// runSandbox creates and starts the pod's sandbox.
func (r *Runtime) runSandbox(ctx context.Context, pod *corev1.Pod, attempt uint32) (string, error) {
	cfg := r.sandboxConfig(pod, attempt)
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		return "", fmt.Errorf("create sandbox: %w", err)
	}
	start := time.Now()
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.rs.RunPodSandbox(cctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return "", fmt.Errorf("create sandbox: %w", err)
	}
	r.log.Info("sandbox started", slog.String("pod", pod.Namespace+"/"+pod.Name),
		slog.String("sandbox", shortID(resp.PodSandboxId)), slog.Int("attempt", int(attempt)),
		slog.Duration("took", time.Since(start)))
	return resp.PodSandboxId, nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func podGrace(pod *corev1.Pod) time.Duration {
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// sysctlDots writes a sysctl name with slashes as separators
// (kernel/shm_rmid_forced, net/ipv4/conf/eno2.100/rp_filter) with dots, as
// the kernel's /proc/sys names and runc want them; the kubelet's
// ConvertSysctlVariableToDotsSeparator: when the first separator is a slash,
// slashes and dots swap (a dot in such a name is part of a component).
func sysctlDots(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.':
			return '/'
		case '/':
			return '.'
		}
		return r
	}, name)
}

// safeSysctls are the sysctls a pod may set: the kubelet's safe set (1.31),
// namespaced and unable to affect other pods or the node. Others are
// refused, as by a kubelet with no --allowed-unsafe-sysctls.
var safeSysctls = map[string]bool{
	"kernel.shm_rmid_forced": true, "net.ipv4.ip_local_port_range": true, "net.ipv4.tcp_syncookies": true,
	"net.ipv4.ping_group_range": true, "net.ipv4.ip_unprivileged_port_start": true,
	"net.ipv4.ip_local_reserved_ports": true, "net.ipv4.tcp_keepalive_time": true, "net.ipv4.tcp_fin_timeout": true,
	"net.ipv4.tcp_keepalive_intvl": true, "net.ipv4.tcp_keepalive_probes": true,
}

// forbiddenSysctl is the first sysctl of the pod outside safeSysctls, or "".
func forbiddenSysctl(pod *corev1.Pod) string {
	if pod.Spec.SecurityContext == nil {
		return ""
	}
	for _, s := range pod.Spec.SecurityContext.Sysctls {
		if !safeSysctls[sysctlDots(s.Name)] {
			return s.Name
		}
	}
	return ""
}
