package cri

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/satoken"
)

// kubeAPIAccess is the volume the API server's ServiceAccount admission
// adds to a pod.
func kubeAPIAccess() corev1.Volume {
	exp := int64(3607)
	return corev1.Volume{Name: "kube-api-access-x1", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: &exp, Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace",
				FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
		}}}}
}

func TestInClusterTokenAndCA(t *testing.T) {
	creds, err := satoken.Load(filepath.Join(t.TempDir(), "creds"), "edge-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	ic := &InClusterAPI{Host: "10.0.0.7", Port: 10551, CACert: creds.CA.CertPEM(), Tokens: creds.Issuer}
	r := &Runtime{cfg: Config{InCluster: ic}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: "pos", UID: "u1"},
		Spec: corev1.PodSpec{ServiceAccountName: "reader", Volumes: []corev1.Volume{kubeAPIAccess()}}}
	env := &podEnv{objs: mapObjects{}, pod: pod, inCluster: ic}
	ps := &podState{tokenSkipLogged: map[string]bool{}}
	out, err := r.projectedPayload(env, ps, "kube-api-access-x1", pod.Spec.Volumes[0].Projected)
	if err != nil {
		t.Fatal(err)
	}
	c, err := creds.Issuer.Verify(string(out["token"].data), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.Pod != (satoken.Pod{Namespace: "store", Name: "pos", UID: "u1", ServiceAccount: "reader"}) {
		t.Errorf("token of %+v", c.Pod)
	}
	if string(out["ca.crt"].data) != string(creds.CA.CertPEM()) || string(out["namespace"].data) != "store" {
		t.Errorf("ca.crt or namespace: %q %q", out["ca.crt"].data, out["namespace"].data)
	}
	// The same token until 80% of its life.
	again, err := r.projectedPayload(env, ps, "kube-api-access-x1", pod.Spec.Volumes[0].Projected)
	if err != nil || string(again["token"].data) != string(out["token"].data) {
		t.Errorf("token minted again at once: %v", err)
	}
	ps.tokenRenew = time.Now().Add(-time.Second)
	again, err = r.projectedPayload(env, ps, "kube-api-access-x1", pod.Spec.Volumes[0].Projected)
	if err != nil || string(again["token"].data) == string(out["token"].data) {
		t.Errorf("token not renewed: %v", err)
	}

	// The kubelet's variables, overridden by the container's own.
	vars, err := env.containerEnv(&corev1.Container{Env: []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_PORT_HTTPS", Value: "own"}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.name+"="+v.value)
	}
	want := "KUBERNETES_SERVICE_HOST=10.0.0.7 KUBERNETES_SERVICE_PORT=10551 KUBERNETES_SERVICE_PORT_HTTPS=own " +
		"KUBERNETES_PORT=tcp://10.0.0.7:10551 KUBERNETES_PORT_10551_TCP=tcp://10.0.0.7:10551 KUBERNETES_PORT_10551_TCP_PROTO=tcp " +
		"KUBERNETES_PORT_10551_TCP_PORT=10551 KUBERNETES_PORT_10551_TCP_ADDR=10.0.0.7"
	if strings.Join(got, " ") != want {
		t.Errorf("env:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	// Without InCluster: no token, no variables.
	r.cfg.InCluster, env.inCluster = nil, nil
	out, err = r.projectedPayload(env, ps, "kube-api-access-x1", pod.Spec.Volumes[0].Projected)
	if err != nil || out["token"].data != nil {
		t.Errorf("a token without InCluster: %v", err)
	}
	if vars, _ := env.containerEnv(&corev1.Container{}); len(vars) != 0 {
		t.Errorf("variables without InCluster: %v", vars)
	}
}
