package staticpods

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tether-edge/tether/protocol"
)

// FuzzParse checks the manifest parser: an accepted manifest is a pod the
// node can run and the hub can mirror. Its name and namespace are valid
// Kubernetes names (the namespace goes into the pod's log directory), it
// validates again, it is bound to the node, it uses no secrets or
// configmaps, and its MirrorPod frame encodes.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		good,
		strings.Replace(good, "containers", "containres", 1),
		strings.Replace(good, "kind: Pod", "kind: Deployment", 1),
		good + "  volumes:\n  - name: s\n    secret:\n      secretName: x\n",
		`apiVersion: v1
kind: Pod
metadata:
  name: node-exporter
  namespace: monitoring
  labels: {app: node-exporter}
  annotations: {prometheus.io/scrape: "true"}
spec:
  hostNetwork: true
  restartPolicy: Always
  initContainers:
  - name: init
    image: busybox:1.36
    command: ["sh", "-c", "true"]
  containers:
  - name: exporter
    image: quay.io/prometheus/node-exporter:v1.8.2
    args: ["--path.rootfs=/host"]
    ports: [{containerPort: 9100, hostPort: 9100}]
    resources: {limits: {memory: 64Mi, cpu: 200m}}
    volumeMounts: [{name: root, mountPath: /host, readOnly: true}]
  volumes:
  - name: root
    hostPath: {path: /}
`,
		`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}`,
	} {
		f.Add([]byte(s))
	}
	const node = "store-0421-pi"
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := parse(in, node)
		if err != nil {
			return
		}
		if errs := validation.IsDNS1123Subdomain(p.Name); len(errs) > 0 {
			t.Fatalf("accepted pod name %q: %v", p.Name, errs)
		}
		if errs := validation.IsDNS1123Label(p.Namespace); len(errs) > 0 {
			t.Fatalf("accepted namespace %q: %v", p.Namespace, errs)
		}
		if !strings.HasSuffix(p.Name, "-"+node) || p.Spec.NodeName != node || p.UID == "" ||
			p.Annotations[ConfigHashAnnotation] != string(p.UID) {
			t.Fatalf("accepted pod not bound to the node: %s/%s uid %q on %q", p.Namespace, p.Name, p.UID, p.Spec.NodeName)
		}
		q := p.DeepCopy()
		q.Name = strings.TrimSuffix(q.Name, "-"+node)
		if err := validate(q, node); err != nil {
			t.Fatalf("accepted pod does not validate again: %v", err)
		}
		for _, v := range p.Spec.Volumes {
			if v.Secret != nil || v.ConfigMap != nil || v.Projected != nil {
				t.Fatalf("accepted volume %q", v.Name)
			}
		}
		for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			if c.Image == "" || c.ImagePullPolicy == "" {
				t.Fatalf("accepted container %q: image %q, pull policy %q", c.Name, c.Image, c.ImagePullPolicy)
			}
		}
		b, err := protocol.EncodePod(p)
		if err != nil {
			t.Fatalf("accepted pod does not encode: %v", err)
		}
		fr := &protocol.Frame{Seq: 1, MirrorPod: &protocol.MirrorPod{Namespace: p.Namespace, Name: p.Name, Pod: b}}
		if _, err := protocol.Encode(fr); err != nil && len(b) < protocol.MaxFrameSize/2 {
			t.Fatalf("the mirror of an accepted pod cannot be sent: %v", err)
		}
	})
}
