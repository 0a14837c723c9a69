//go:build integration

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

const staticPod = `apiVersion: v1
kind: Pod
metadata:
  name: pos
  namespace: default
spec:
  containers:
  - name: pos
    image: busybox:IMAGE
    command: ["sleep", "3600"]
`

// Static pods run although the node never reached the cloud, show up as
// mirror pods once it does, follow their manifest, and a bad manifest is
// reported without stopping the others.
func TestStaticPods(t *testing.T) {
	c := startCloud(t)
	e := newEdge(t, c, "e2e-static")
	dir := filepath.Join(e.dir, "manifests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("pos.yaml", strings.Replace(staticPod, "IMAGE", "1.36", 1))
	write("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  containers: []\n")

	// The cloud is out of reach from the first start.
	e.link.Cut()
	e.start()
	eventually(t, 10*time.Second, "static pod running with no cloud", func() (bool, error) {
		uids, err := e.ec.Runtime.Pods(t.Context())
		return len(uids) == 1, err
	})
	if e.ec.Agent.State().Sessions != 0 {
		t.Fatal("the edge reached the cloud through a cut link")
	}

	e.link.Heal()
	mirrorName := "pos-" + e.name
	var first *corev1.Pod
	eventually(t, 30*time.Second, "mirror pod Running in the API server", func() (bool, error) {
		p, err := client.CoreV1().Pods("default").Get(t.Context(), mirrorName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		first = p
		return p.Status.Phase == corev1.PodRunning && p.Annotations[corev1.MirrorPodAnnotationKey] != "", nil
	})
	eventually(t, 30*time.Second, "a warning event for the bad manifest", func() (bool, error) {
		evs, err := client.CoreV1().Events("default").List(t.Context(), metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", e.name).String()})
		if err != nil {
			return false, err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "FailedStaticPod" && strings.Contains(ev.Message, "broken.yaml") {
				return true, nil
			}
		}
		return false, nil
	})

	// A changed manifest replaces the pod and its mirror.
	write("pos.yaml", strings.Replace(staticPod, "IMAGE", "1.37", 1))
	eventually(t, 30*time.Second, "mirror pod replaced", func() (bool, error) {
		p, err := client.CoreV1().Pods("default").Get(t.Context(), mirrorName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return p.UID != first.UID && p.Spec.Containers[0].Image == "busybox:1.37" && p.Status.Phase == corev1.PodRunning, nil
	})
	// A removed manifest removes both.
	if err := os.Remove(filepath.Join(dir, "pos.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "mirror pod gone", func() (bool, error) {
		_, err := client.CoreV1().Pods("default").Get(t.Context(), mirrorName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	eventually(t, 10*time.Second, "static pod stopped", func() (bool, error) {
		uids, err := e.ec.Runtime.Pods(t.Context())
		return len(uids) == 0, err
	})
}
