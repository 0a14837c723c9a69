//go:build integration

package cri

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
	"github.com/tether-edge/tether/testimages"
)

// PullAlways with a private image already on the node: the pod with the
// pull secret runs it; a pod without the secret gets the registry's 401 as
// ErrImagePull and never runs it (the image another pod pulled is not
// its); with the registry unreachable the image present starts (offline
// autonomy).
func TestPullAlwaysPrivateImagePresent(t *testing.T) {
	reg, err := critest.StartRegistry()
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	host := fmt.Sprintf("private-%d.tether.test", time.Now().UnixNano()%1e9)
	image := host + "/app:1"
	files, err := testimages.BusyboxFiles(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Add(image, files, testimages.Config{Cmd: []string{"sh"}}); err != nil {
		t.Fatal(err)
	}
	if err := reg.RequireAuth(image, "puller", "s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := containerd.Mirror(host, reg.URL); err != nil {
		t.Fatal(err)
	}
	defer containerd.Mirror(host, "")

	objs := newObjects()
	auth := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
	cfg, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"auth": auth}}})
	objs.setSecret("default", "regcred", map[string][]byte{corev1.DockerConfigJsonKey: cfg})
	r := newRuntime(t, objs)
	pod := func(name string, secret bool) *corev1.Pod {
		p := busyboxPod(name, `exec sleep 3600`)
		p.Spec.Containers[0].Image = image
		p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		if secret {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		}
		return p
	}

	syncUntil(t, r, pod("with-secret", true), 30*time.Second, "the pod with the secret running", running("app"))
	before := reg.Pulls(image)

	without := pod("without-secret", false)
	st := syncUntil(t, r, without, 30*time.Second, "ErrImagePull for the pod without the secret",
		func(st *corev1.PodStatus) bool {
			cs := containerStatus(st, "app")
			return cs.State.Waiting != nil &&
				(cs.State.Waiting.Reason == "ErrImagePull" || cs.State.Waiting.Reason == "ImagePullBackOff")
		})
	for range 5 { // and it stays so: never started from the image present
		time.Sleep(200 * time.Millisecond)
		if st, err = r.SyncPod(t.Context(), without); err != nil {
			t.Fatal(err)
		}
		if cs := containerStatus(st, "app"); cs.State.Running != nil || cs.ContainerID != "" {
			t.Fatalf("the pod without the secret runs the private image:\n%s", describe(st))
		}
	}
	if reg.Pulls(image) == before {
		t.Error("the pod without the secret started without asking the registry")
	}

	// The registry unreachable: the image present starts, secret or not.
	if err := containerd.Mirror(host, "http://127.0.0.1:9"); err != nil {
		t.Fatal(err)
	}
	syncUntil(t, r, pod("offline", true), 30*time.Second, "the pod running from the image present with the registry unreachable", running("app"))
}
