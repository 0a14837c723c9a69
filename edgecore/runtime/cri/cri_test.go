package cri

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "1",
		"x$(A)y$(B)z":    "x1ytwoz",
		"$(MISSING)":     "$(MISSING)",
		"$$(A)":          "$(A)",
		"$$":             "$",
		"$(A":            "$(A",
		"$":              "$",
		"a$b":            "a$b",
		"$(A)$(A)$$$(B)": "11$two",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

type mapObjects struct {
	cms     map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
	svcs    []*corev1.Service
}

func (m mapObjects) Services(ns string) ([]*corev1.Service, error) {
	var out []*corev1.Service
	for _, s := range m.svcs {
		if s.Namespace == ns {
			out = append(out, s)
		}
	}
	return out, nil
}

func (m mapObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) { return m.cms[name], nil }
func (m mapObjects) Secret(ns, name string) (*corev1.Secret, error)       { return m.secrets[name], nil }

func TestContainerEnv(t *testing.T) {
	optional := true
	objs := mapObjects{
		cms:     map[string]*corev1.ConfigMap{"cfg": {Data: map[string]string{"X": "from-cm", "Y": "y"}}},
		secrets: map[string]*corev1.Secret{"sec": {Data: map[string][]byte{"PASS": []byte("pw")}}},
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "web"}}}
	c := &corev1.Container{
		Name: "c",
		EnvFrom: []corev1.EnvFromSource{
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}},
			{Prefix: "S_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}}},
			{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "none"}, Optional: &optional}},
		},
		Env: []corev1.EnvVar{
			{Name: "X", Value: "override-$(Y)"},
			{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
			{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "nope", Optional: &optional}}},
			{Name: "LATER", Value: "$(IP):$(UNDEFINED)"},
		},
		Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("64Mi"), corev1.ResourceCPU: resource.MustParse("250m")}},
	}
	e := &podEnv{objs: objs, pod: pod, podIP: "10.1.2.3", nodeName: "edge-1"}
	vars, err := e.containerEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.name+"="+v.value)
	}
	want := "X=override-y Y=y S_PASS=pw IP=10.1.2.3 APP=web NODE=edge-1 MEM=64 CPU=1 LATER=10.1.2.3:$(UNDEFINED)"
	if strings.Join(got, " ") != want {
		t.Errorf("env:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	c.Env = append(c.Env, corev1.EnvVar{Name: "BAD", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "missing"}}})
	if _, err := e.containerEnv(c); err == nil || !strings.Contains(err.Error(), `configmap "cfg" has no key "missing"`) {
		t.Errorf("missing key: %v", err)
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	write := func(p map[string]fileProjection) bool {
		t.Helper()
		changed, err := writeAtomic(dir, p, -1)
		if err != nil {
			t.Fatal(err)
		}
		return changed
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if !write(map[string]fileProjection{"a": {[]byte("1"), 0o644}, "sub/b": {[]byte("2"), 0o600}}) {
		t.Error("first write reported no change")
	}
	if read("a") != "1" || read("sub/b") != "2" {
		t.Errorf("a=%s sub/b=%s", read("a"), read("sub/b"))
	}
	if fi, _ := os.Stat(filepath.Join(dir, "sub/b")); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	target1, _ := os.Readlink(filepath.Join(dir, "..data"))
	if write(map[string]fileProjection{"a": {[]byte("1"), 0o644}, "sub/b": {[]byte("2"), 0o600}}) {
		t.Error("same payload reported a change")
	}
	if !write(map[string]fileProjection{"a": {[]byte("one"), 0o644}, "c": {[]byte("3"), 0o644}}) {
		t.Error("new payload reported no change")
	}
	if read("a") != "one" || read("c") != "3" {
		t.Errorf("after update a=%s c=%s", read("a"), read("c"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("sub left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, target1)); !os.IsNotExist(err) {
		t.Errorf("old version %s left behind: %v", target1, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if len(names) != 4 || !strings.HasPrefix(names[0], "..2") || names[1] != "..data" || names[2] != "a" || names[3] != "c" {
		t.Errorf("dir holds %v", names)
	}
	for _, bad := range []string{"../x", "/abs", "..data", "a/../../b"} {
		if _, err := writeAtomic(dir, map[string]fileProjection{bad: {}}, -1); err == nil {
			t.Errorf("path %q accepted", bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff(10*time.Second, 40*time.Second)
	now := time.Unix(1000, 0)
	if d := b.remaining("k", now, now); d != 0 {
		t.Errorf("no entry: remaining %s", d)
	}
	var delays []time.Duration
	for i := 0; i < 4; i++ {
		delays = append(delays, b.next("k", now))
	}
	if want := []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 40 * time.Second}; !equalDurations(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}
	if d := b.remaining("k", now, now.Add(15*time.Second)); d != 25*time.Second {
		t.Errorf("remaining %s, want 25s", d)
	}
	// Untouched for 2*max: starts over.
	later := now.Add(81 * time.Second)
	if d := b.remaining("k", later, later); d != 0 {
		t.Errorf("expired entry: remaining %s", d)
	}
	if d := b.next("k", later); d != 10*time.Second {
		t.Errorf("after expiry %s, want 10s", d)
	}
	b.forgetPrefix("k")
	if b.delay("k") != 0 {
		t.Error("forgotten key kept its delay")
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPhase(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	exited := func(code int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
	}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	crashLoop := corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: exited(1)}
	cs := func(s corev1.ContainerState) corev1.ContainerStatus { return corev1.ContainerStatus{State: s} }
	cases := []struct {
		policy  corev1.RestartPolicy
		init    []corev1.ContainerStatus
		regular []corev1.ContainerStatus
		want    corev1.PodPhase
	}{
		{"", nil, []corev1.ContainerStatus{cs(waiting)}, corev1.PodPending},
		{"", nil, []corev1.ContainerStatus{cs(running), cs(waiting)}, corev1.PodPending},
		{"", nil, []corev1.ContainerStatus{cs(running), crashLoop}, corev1.PodRunning},
		{"", nil, []corev1.ContainerStatus{crashLoop}, corev1.PodRunning},
		{corev1.RestartPolicyNever, nil, []corev1.ContainerStatus{cs(exited(0))}, corev1.PodSucceeded},
		{corev1.RestartPolicyNever, nil, []corev1.ContainerStatus{cs(exited(0)), cs(exited(2))}, corev1.PodFailed},
		{corev1.RestartPolicyOnFailure, nil, []corev1.ContainerStatus{cs(exited(0))}, corev1.PodSucceeded},
		{corev1.RestartPolicyOnFailure, nil, []corev1.ContainerStatus{crashLoop}, corev1.PodRunning},
		{"", []corev1.ContainerStatus{cs(running)}, []corev1.ContainerStatus{cs(waiting)}, corev1.PodPending},
		{corev1.RestartPolicyNever, []corev1.ContainerStatus{cs(exited(1))}, []corev1.ContainerStatus{cs(waiting)}, corev1.PodFailed},
		{"", []corev1.ContainerStatus{cs(exited(0))}, []corev1.ContainerStatus{cs(running)}, corev1.PodRunning},
	}
	for i, c := range cases {
		pod := &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: c.policy}}
		if got := phase(pod, &corev1.PodStatus{InitContainerStatuses: c.init, ContainerStatuses: c.regular}); got != c.want {
			t.Errorf("case %d: phase %s, want %s", i, got, c.want)
		}
	}
}

func TestValidatePod(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{Name: "v"}},
			Containers: []corev1.Container{
				{Name: "a", Image: "img", VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}},
			}}}
	if msg := validatePod(pod); msg != "" {
		t.Fatalf("good pod: %s", msg)
	}
	bad := pod.DeepCopy()
	bad.Spec.Containers = append(bad.Spec.Containers, corev1.Container{Name: "a", Image: "",
		VolumeMounts:  []corev1.VolumeMount{{Name: "w", MountPath: "rel"}},
		LivenessProbe: &corev1.Probe{}},
		// A name is a path component of the container's log and
		// termination files: ".." would climb out of the pod's directory.
		corev1.Container{Name: "..", Image: "img"})
	msg := validatePod(bad)
	for _, want := range []string{`spec.containers[1].name: "a" is used twice`, "spec.containers[1].image: empty",
		`spec.containers[2].name: ".." is not a valid name`,
		`volume "w" is not defined`, `mountPath: "rel" is not absolute`, "livenessProbe: needs exactly one handler"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

// TestValidatePodEphemeralContainers: an ephemeral container's name (a path
// component of its log and termination files), image and mounts are
// checked like a container's.
func TestValidatePodEphemeralContainers(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "img"}},
			EphemeralContainers: []corev1.EphemeralContainer{{TargetContainerName: "a",
				EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox"}}}}}
	if msg := validatePod(pod); msg != "" {
		t.Fatalf("good pod: %s", msg)
	}
	bad := pod.DeepCopy()
	bad.Spec.EphemeralContainers = append(bad.Spec.EphemeralContainers,
		corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "../x", Image: "busybox"}},
		corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "a", Image: " ",
			VolumeMounts: []corev1.VolumeMount{{Name: "nope", MountPath: "/n"}}}})
	msg := validatePod(bad)
	for _, want := range []string{`spec.ephemeralContainers[1].name: "../x" is not a valid name`,
		`spec.ephemeralContainers[2].name: "a" is used twice`, "spec.ephemeralContainers[2].image: empty",
		`spec.ephemeralContainers[2].volumeMounts[0].name: volume "nope" is not defined`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Endpoint != "/run/containerd/containerd.sock" || c.PodLogDir != "/var/log/pods" || c.CgroupParent != "/tether" ||
		c.BackoffInitial.Duration != 10*time.Second || c.BackoffMax.Duration != 5*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	c = Config{Endpoint: "unix:///tmp/x.sock"}
	if err := c.Validate(); err != nil || c.Endpoint != "/tmp/x.sock" {
		t.Errorf("unix URL: %v %s", err, c.Endpoint)
	}
}

func TestQOSAndResources(t *testing.T) {
	r := &Runtime{nodeMem: resource.MustParse("1Gi")}
	c := corev1.Container{Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("512Mi")},
	}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}
	if q := qos(pod); q != corev1.PodQOSBurstable {
		t.Errorf("qos %s", q)
	}
	res := r.resources(pod, &c)
	if res.CpuShares != 102 || res.CpuQuota != 50000 || res.CpuPeriod != 100000 || res.MemoryLimitInBytes != 512<<20 || res.OomScoreAdj != 750 {
		t.Errorf("resources %+v", res)
	}
	best := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{}}}}
	if q := qos(best); q != corev1.PodQOSBestEffort {
		t.Errorf("qos %s", q)
	}
	if res := r.resources(best, &best.Spec.Containers[0]); res.CpuShares != 2 || res.CpuQuota != 0 || res.OomScoreAdj != 1000 {
		t.Errorf("best effort resources %+v", res)
	}
}

func TestPullAuth(t *testing.T) {
	cfg := `{"auths":{"https://index.docker.io/v1/":{"auth":"` + "dTE6cDE=" + `"},"registry.example:5000":{"username":"u2","password":"p2"}}}`
	objs := mapObjects{secrets: map[string]*corev1.Secret{"regcred": {Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)}}}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{ImagePullSecrets: []corev1.LocalObjectReference{{Name: "missing"}, {Name: "regcred"}}}}
	s := &podSync{pod: pod, env: &podEnv{objs: objs, pod: pod}}
	for image, want := range map[string]string{
		"busybox":                        "u1:p1",
		"library/busybox:1":              "u1:p1",
		"registry.example:5000/app:v1":   "u2:p2",
		"registry.example/app:v1":        "", // another port, another registry
		"other.example/app:v1":           "",
		"docker.io/library/busybox:1.36": "u1:p1",
	} {
		got := ""
		if a := s.pullAuth(image); a != nil {
			got = a.Username + ":" + a.Password
			if a.ServerAddress != "" {
				t.Errorf("%s: ServerAddress %q, want none (the kubelet's: containerd would keep the credentials from the registry's mirrors)", image, a.ServerAddress)
			}
		}
		if got != want {
			t.Errorf("%s: auth %q, want %q", image, got, want)
		}
	}
}

// TestInitContainerReadyWhenCompleted: an init container that exited 0 is
// Ready in the pod's status, one that failed is not (the kubelet's rule,
// checked by the conformance suite's InitContainer specs).
func TestInitContainerReadyWhenCompleted(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		RestartPolicy:  corev1.RestartPolicyNever,
		InitContainers: []corev1.Container{{Name: "init1"}, {Name: "init2"}},
		Containers:     []corev1.Container{{Name: "app"}},
	}}
	exited := func(id string, code int32) []*runtimeapi.ContainerStatus {
		return []*runtimeapi.ContainerStatus{{Id: id, State: runtimeapi.ContainerState_CONTAINER_EXITED, ExitCode: code}}
	}
	s := &podSync{r: &Runtime{}, pod: pod, ps: &podState{conditions: map[corev1.PodConditionType]conditionState{}}, now: time.Now(),
		waiting:    map[string]*corev1.ContainerStateWaiting{},
		containers: map[string][]*runtimeapi.ContainerStatus{"init1": exited("a", 0), "init2": exited("b", 1)}}
	st := s.status()
	if len(st.InitContainerStatuses) != 2 {
		t.Fatalf("%d init container statuses, want 2", len(st.InitContainerStatuses))
	}
	if !st.InitContainerStatuses[0].Ready {
		t.Error("init1 exited 0 and is not Ready")
	}
	if st.InitContainerStatuses[1].Ready {
		t.Error("init2 exited 1 and is Ready")
	}
}

// TestServiceEnv: the kubelet's service variables for the Services of the
// pod's namespace with a cluster IP (not headless ones, not other
// namespaces'), replaced by what the container defines, and none when the
// pod turns service links off.
func TestServiceEnv(t *testing.T) {
	svc := func(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
	}
	objs := mapObjects{svcs: []*corev1.Service{
		svc("ns", "foo-service", "10.96.0.10", corev1.ServicePort{Port: 8765},
			corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP}),
		svc("ns", "headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80}),
		svc("other", "elsewhere", "10.96.0.11", corev1.ServicePort{Port: 80}),
	}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns"}}
	c := &corev1.Container{Name: "c", Env: []corev1.EnvVar{
		{Name: "FOO_SERVICE_SERVICE_PORT", Value: "mine"},
		{Name: "URL", Value: "http://$(FOO_SERVICE_SERVICE_HOST)/"},
	}}
	vars, err := (&podEnv{objs: objs, pod: pod}).containerEnv(c)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vars {
		got = append(got, v.name+"="+v.value)
	}
	want := []string{
		"FOO_SERVICE_SERVICE_HOST=10.96.0.10", "FOO_SERVICE_SERVICE_PORT=mine", "FOO_SERVICE_SERVICE_PORT_DNS_UDP=53",
		"FOO_SERVICE_PORT=tcp://10.96.0.10:8765",
		"FOO_SERVICE_PORT_8765_TCP=tcp://10.96.0.10:8765", "FOO_SERVICE_PORT_8765_TCP_PROTO=tcp",
		"FOO_SERVICE_PORT_8765_TCP_PORT=8765", "FOO_SERVICE_PORT_8765_TCP_ADDR=10.96.0.10",
		"FOO_SERVICE_PORT_53_UDP=udp://10.96.0.10:53", "FOO_SERVICE_PORT_53_UDP_PROTO=udp",
		"FOO_SERVICE_PORT_53_UDP_PORT=53", "FOO_SERVICE_PORT_53_UDP_ADDR=10.96.0.10",
		"URL=http://10.96.0.10/",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("env:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(want, " "))
	}

	off := false
	pod.Spec.EnableServiceLinks = &off
	vars, err = (&podEnv{objs: objs, pod: pod}).containerEnv(&corev1.Container{Name: "c"})
	if err != nil || len(vars) != 0 {
		t.Errorf("service links off: %v, %v", vars, err)
	}
}

func TestSysctlDots(t *testing.T) {
	for in, want := range map[string]string{
		"kernel.shm_rmid_forced":           "kernel.shm_rmid_forced",
		"kernel/shm_rmid_forced":           "kernel.shm_rmid_forced",
		"net/ipv4/conf/eno2.100/rp_filter": "net.ipv4.conf.eno2/100.rp_filter",
		"net.ipv4.conf.eno2/100.rp_filter": "net.ipv4.conf.eno2/100.rp_filter",
		"":                                 "",
	} {
		if got := sysctlDots(in); got != want {
			t.Errorf("sysctlDots(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPodOSRejected: a pod whose spec.os is not this node's fails with
// PodOSNotSupported without reaching containerd (the Runtime has no
// connection here).
func TestPodOSRejected(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Spec: corev1.PodSpec{OS: &corev1.PodOS{Name: "windows"}, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	st, err := (&Runtime{}).SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != corev1.PodFailed || st.Reason != "PodOSNotSupported" {
		t.Errorf("phase %s reason %s, want Failed PodOSNotSupported", st.Phase, st.Reason)
	}
}

func TestProbeGrace(t *testing.T) {
	podG, probeG := int64(500), int64(5)
	pod := &corev1.Pod{Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &podG}}
	if g := probeGrace(pod, &corev1.Probe{TerminationGracePeriodSeconds: &probeG}); g != 5*time.Second {
		t.Errorf("probe's own grace: %s, want 5s", g)
	}
	if g := probeGrace(pod, &corev1.Probe{}); g != 500*time.Second {
		t.Errorf("no probe grace: %s, want the pod's 500s", g)
	}
}

// TestSysctlForbidden: a pod with a sysctl outside the kubelet's safe set
// fails with SysctlForbidden without reaching containerd; safe ones pass
// admission, also written with slashes.
func TestSysctlForbidden(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}},
			SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{
				{Name: "kernel/shm_rmid_forced", Value: "1"}, {Name: "kernel.msgmax", Value: "10000000000"}}}}}
	st, err := (&Runtime{}).SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != corev1.PodFailed || st.Reason != "SysctlForbidden" || !strings.Contains(st.Message, "kernel.msgmax") {
		t.Errorf("phase %s reason %s message %q, want Failed SysctlForbidden naming kernel.msgmax", st.Phase, st.Reason, st.Message)
	}
	pod.Spec.SecurityContext.Sysctls = pod.Spec.SecurityContext.Sysctls[:1]
	if name := forbiddenSysctl(pod); name != "" {
		t.Errorf("the safe kernel/shm_rmid_forced is forbidden")
	}
}
