//go:build integration

package cri_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/edgecore/runtime/cri"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// edgecore with `runtime: cri` runs a pod from its store, with a ConfigMap
// from the store, reports its status in the outbox, and kills it when the
// pod is deleted. The pod manager's resync is an hour: the runtime's
// notifications drive it.
func TestEdgecoreRunsStorePodsInContainerd(t *testing.T) {
	env := cri.IntegrationContainerd()
	ec, err := edgecore.New(edgecore.Config{
		NodeName: "edge-wiring",
		// No cloud: nothing listens on port 1.
		Cloud: edgecore.CloudConfig{URL: "wss://127.0.0.1:1/v1/connect", Dialer: &link.Dialer{
			URL: "wss://127.0.0.1:1/v1/connect", TLS: &tls.Config{}, Timeout: time.Second}},
		DataDir:           t.TempDir(),
		StaticPodPath:     t.TempDir(),
		NodeIP:            "127.0.0.1",
		Runtime:           "cri",
		PodResyncInterval: metav1.Duration{Duration: time.Hour},
		Devices:           edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Addr: "127.0.0.1:0"}}, // 1883 may be taken
		CRI: cri.Config{Endpoint: env.Endpoint, PauseImage: env.PauseImage, PodLogDir: t.TempDir(),
			CgroupParent: cri.IntegrationCgroupParent},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "settings", UID: "cm-1"},
		Data: map[string]string{"MODE": "edge"}}
	grace := int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "wired", UID: "0b6a3a52-0000-4000-8000-000000000001"},
		Spec: corev1.PodSpec{NodeName: "edge-wiring", TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "app", Image: env.BusyboxImage, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sh", "-c", "echo mode=$MODE; exec sleep 3600"},
				EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}}}},
	}
	put := func() {
		t.Helper()
		cmb, _ := protocol.EncodeConfigMap(cm)
		pb, _ := protocol.EncodePod(pod)
		err := ec.DB.Update(func(tx *store.Tx) error {
			return errors.Join(
				tx.PutObject(&protocol.Object{Kind: protocol.KindConfigMap, UID: string(cm.UID), Namespace: cm.Namespace, Name: cm.Name, ResourceVersion: "1", Data: cmb}),
				tx.PutObject(&protocol.Object{Kind: protocol.KindPod, UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name, ResourceVersion: "1", Data: pb}))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	put()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ec.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		ec.Close()
	}()

	// outbox returns the pod's last queued status and whether its
	// termination is queued.
	outbox := func() (st *corev1.PodStatus, terminated bool) {
		ec.DB.View(func(tx *store.Tx) error {
			return tx.Outbox(0, func(it store.OutboxItem) bool {
				f, err := protocol.Decode(it.Frame)
				if err != nil {
					t.Fatal(err)
				}
				if f.PodStatus != nil && f.PodStatus.UID == string(pod.UID) {
					st, _ = protocol.DecodePodStatus(f.PodStatus.Status)
				}
				if f.PodTerminated != nil && f.PodTerminated.UID == string(pod.UID) {
					terminated = true
				}
				return true
			})
		})
		return st, terminated
	}
	start := time.Now()
	for {
		st, _ := outbox()
		if st != nil && st.Phase == corev1.PodRunning && len(st.ContainerStatuses) == 1 && st.ContainerStatuses[0].Ready {
			t.Logf("Running and Ready in the outbox %s after Run", time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no Running status queued; last %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	uids, err := ec.Runtime.Pods(t.Context())
	if err != nil || len(uids) != 1 || uids[0] != pod.UID {
		t.Fatalf("runtime pods %v %v", uids, err)
	}

	now := metav1.Now()
	zero := int64(0)
	pod.DeletionTimestamp, pod.DeletionGracePeriodSeconds = &now, &zero
	put()
	ec.Pods.Changed()
	for {
		if _, terminated := outbox(); terminated {
			break
		}
		if time.Since(now.Time) > 20*time.Second {
			t.Fatal("no PodTerminated queued")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if uids, err := ec.Runtime.Pods(t.Context()); err != nil || len(uids) != 0 {
		t.Errorf("runtime pods after delete: %v %v", uids, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
