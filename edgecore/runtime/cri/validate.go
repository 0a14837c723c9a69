package cri

import (
	"fmt"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// validatePod checks what the runtime relies on. The API server validates
// pods, but pods also come from static manifests and old stores; a pod that
// fails here is reported Failed with every problem in the message, and
// nothing of it runs.
func validatePod(pod *corev1.Pod) string {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if pod.UID == "" || strings.ContainsAny(string(pod.UID), "/*?[\\ ") {
		add("metadata.uid: %q is not a UID", pod.UID)
	}
	if pod.Name == "" || pod.Namespace == "" || strings.ContainsAny(pod.Name+pod.Namespace, "/_ ") {
		add("metadata: bad name %q or namespace %q", pod.Name, pod.Namespace)
	}
	switch pod.Spec.RestartPolicy {
	case "", corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		add("spec.restartPolicy: %q is not Always, OnFailure or Never", pod.Spec.RestartPolicy)
	}
	if len(pod.Spec.Containers) == 0 {
		add("spec.containers: none")
	}
	volumes := map[string]bool{}
	for i, v := range pod.Spec.Volumes {
		if v.Name == "" || strings.ContainsAny(v.Name, "/ ") || strings.HasPrefix(v.Name, ".") {
			add("spec.volumes[%d].name: %q is not a valid name", i, v.Name)
		}
		if volumes[v.Name] {
			add("spec.volumes[%d].name: %q is used twice", i, v.Name)
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	check := func(field string, c *corev1.Container) {
		if c.Name == "" || strings.ContainsAny(c.Name, "/ ") || strings.HasPrefix(c.Name, ".") {
			add("%s.name: %q is not a valid name", field, c.Name)
		}
		if names[c.Name] {
			add("%s.name: %q is used twice", field, c.Name)
		}
		names[c.Name] = true
		if strings.TrimSpace(c.Image) == "" {
			add("%s.image: empty", field)
		}
		for j, vm := range c.VolumeMounts {
			if !volumes[vm.Name] {
				add("%s.volumeMounts[%d].name: volume %q is not defined", field, j, vm.Name)
			}
			if !filepath.IsAbs(vm.MountPath) {
				add("%s.volumeMounts[%d].mountPath: %q is not absolute", field, j, vm.MountPath)
			}
			if vm.SubPath != "" {
				if err := validatePayloadPath(vm.SubPath); err != nil {
					add("%s.volumeMounts[%d].subPath: %v", field, j, err)
				}
			}
		}
		for j, e := range c.Env {
			if e.Name == "" {
				add("%s.env[%d].name: empty", field, j)
			}
			if e.Value != "" && e.ValueFrom != nil {
				add("%s.env[%d]: both value and valueFrom", field, j)
			}
		}
		for j, p := range c.Ports {
			if p.ContainerPort <= 0 || p.ContainerPort > 65535 || p.HostPort < 0 || p.HostPort > 65535 {
				add("%s.ports[%d]: port out of range", field, j)
			}
		}
		for kind, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe,
			"readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
			if p == nil {
				continue
			}
			n := 0
			for _, set := range []bool{p.Exec != nil, p.HTTPGet != nil, p.TCPSocket != nil, p.GRPC != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				add("%s.%s: needs exactly one handler, has %d", field, kind, n)
			}
		}
	}
	for i := range pod.Spec.InitContainers {
		check(fmt.Sprintf("spec.initContainers[%d]", i), &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		check(fmt.Sprintf("spec.containers[%d]", i), &pod.Spec.Containers[i])
	}
	for i := range pod.Spec.EphemeralContainers {
		c := corev1.Container(pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		check(fmt.Sprintf("spec.ephemeralContainers[%d]", i), &c)
	}
	return strings.Join(errs, "; ")
}
