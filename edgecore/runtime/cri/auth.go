package cri

import (
	"encoding/base64"
	"encoding/json"
	"strings"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pullAuth finds credentials for image in the pod's imagePullSecrets
// (kubernetes.io/dockerconfigjson or dockercfg Secrets), matching the
// image's registry host. Missing Secrets are skipped, as the kubelet does.
//
// The AuthConfig has no ServerAddress, as the kubelet's
// (credentialprovider's keyring leaves it empty): the credentials are
// chosen here for the image's registry only, and containerd gives them to
// the endpoints its configuration names for that registry, a mirror
// included. With ServerAddress set, containerd gives them to the host of
// that name only, so a private registry reached through a node's mirror
// answers 401 (the conformance spec "should be able to pull from private
// registry with secret" pulls through one).
func (s *podSync) pullAuth(image string) *runtimeapi.AuthConfig {
	host := registryHost(image)
	for _, ref := range s.pod.Spec.ImagePullSecrets {
		optional := true
		sec, err := s.env.secret(ref.Name, &optional)
		if err != nil || sec == nil {
			continue
		}
		var auths map[string]dockerAuth
		switch {
		case len(sec.Data[corev1.DockerConfigJsonKey]) > 0:
			var cfg struct {
				Auths map[string]dockerAuth `json:"auths"`
			}
			if json.Unmarshal(sec.Data[corev1.DockerConfigJsonKey], &cfg) != nil {
				continue
			}
			auths = cfg.Auths
		case len(sec.Data[corev1.DockerConfigKey]) > 0:
			if json.Unmarshal(sec.Data[corev1.DockerConfigKey], &auths) != nil {
				continue
			}
		}
		for key, a := range auths {
			if normalizeRegistry(key) != host {
				continue
			}
			user, pass := a.Username, a.Password
			if user == "" && a.Auth != "" {
				if b, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
					user, pass, _ = strings.Cut(string(b), ":")
				}
			}
			return &runtimeapi.AuthConfig{Username: user, Password: pass,
				IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		}
	}
	return nil
}

type dockerAuth struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// registryHost is the registry an image reference names: its first path
// element when that looks like a host, else Docker Hub.
func registryHost(image string) string {
	first, _, ok := strings.Cut(image, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return normalizeRegistry(first)
	}
	return "docker.io"
}

// normalizeRegistry reduces a docker config key ("https://index.docker.io/v1/",
// "registry.example:5000") to a host.
func normalizeRegistry(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key, _, _ = strings.Cut(key, "/")
	switch key {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return key
}
