package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/events"
	"github.com/tether-edge/tether/edgecore/runtime"
)

var _ runtime.Runtime = (*Runtime)(nil)

// Labels and annotations put on sandboxes and containers. The io.kubernetes
// ones are the kubelet's, so crictl and other tools show our pods the same
// way.
const (
	labelPodUID        = "io.kubernetes.pod.uid"
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelContainerName = "io.kubernetes.container.name"
	// labelManaged marks what edgecore made; Pods and the relist look at
	// nothing else.
	labelManaged = "tether.io/managed-by"
	managedBy    = "edgecore"
	// labelNode names the node whose edgecore made a sandbox or container,
	// so that edgecores sharing a containerd leave each other's pods alone
	// (see ours).
	labelNode = "tether.io/node"

	annotationHash            = "io.kubernetes.container.hash"
	annotationRestartCount    = "io.kubernetes.container.restartCount"
	annotationTermMsgPath     = "io.kubernetes.container.terminationMessagePath"
	annotationGrace           = "io.kubernetes.pod.terminationGracePeriod"
	annotationTermMsgHostPath = "tether.io/termination-message-host-path"
)

// Runtime runs pods in containerd through the CRI API. Build it with New.
// Its methods may be called from several goroutines at once, but SyncPod
// and KillPod calls for one pod must not overlap (pods.Manager never makes
// two for one pod at once): the pod's podState belongs to the call.
type Runtime struct {
	cfg     Config
	objs    Objects
	log     *slog.Logger
	conn    *grpc.ClientConn
	rs      runtimeapi.RuntimeServiceClient
	is      runtimeapi.ImageServiceClient
	version string
	nodeCPU resource.Quantity
	nodeMem resource.Quantity

	restarts *backoff // per <pod uid>/<container name>
	pullBack *backoff // per image

	// bg is the context of background work (pulls, probes), ended by Close;
	// wg joins that work.
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// pods is what the runtime remembers of each pod it synced; guarded
	// by mu.
	pods map[types.UID]*podState
	// pulls are the image pulls running or failed; guarded by mu.
	pulls map[string]*pullState
	// kills are the container IDs being stopped in the background; guarded
	// by mu.
	kills map[string]bool
	// legacyLogged: sandboxes without labelNode were reported; guarded by
	// mu.
	legacyLogged bool

	// gcMu serializes image garbage collections and guards imageRecords,
	// what they remember of each image by ID.
	gcMu         sync.Mutex
	imageRecords map[string]*imageRecord
}

// podState is what the runtime keeps about a pod between syncs. Only the
// goroutine calling SyncPod or KillPod for the pod touches it, one at a
// time; prober has its own lock, and Close reads it with Runtime.mu held.
type podState struct {
	pod    *corev1.Pod
	prober *prober
	// attempts is the highest attempt number seen per container name, so
	// restart counts go on when a sandbox is replaced.
	attempts map[string]uint32
	// conditions keeps the last transition time of each condition.
	conditions map[corev1.PodConditionType]conditionState
	// volumesWritten and tokenSkipLogged say which volumes were written and
	// which serviceAccountToken skips were logged.
	volumesWritten  map[string]bool
	tokenSkipLogged map[string]bool
	// token is the pod's service-account token of the in-cluster API and
	// when it is renewed; "" before the first.
	token      string
	tokenRenew time.Time
	// lastWaiting is the last waiting reason logged per container.
	lastWaiting map[string]string
	// wake is when a sync was last asked for (a back-off's end).
	wake time.Time
}

type conditionState struct {
	status corev1.ConditionStatus
	at     metav1.Time
}

// New connects to containerd at cfg.Endpoint and checks that it answers
// (and, if cfg.PauseImage is set, that the pause image is present). Stop the
// background work and close the connection with Close.
func New(ctx context.Context, cfg Config, objs Objects, log *slog.Logger) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cri config: %w", err)
	}
	if objs == nil {
		return nil, errors.New("cri: no Objects")
	}
	if cfg.NodeName == "" {
		return nil, errors.New("cri: no NodeName (sandboxes carry it, so that edgecores sharing a containerd keep apart)")
	}
	if log == nil {
		log = slog.Default()
	}
	conn, err := grpc.NewClient("unix://"+cfg.Endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A containerd that was down a long time is found again within
		// seconds of its return, not after gRPC's back-off of up to 2m.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: grpcbackoff.Config{BaseDelay: 500 * time.Millisecond,
			Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second}, MinConnectTimeout: 5 * time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("cri: dial %s: %w", cfg.Endpoint, err)
	}
	r := &Runtime{cfg: cfg, objs: objs, log: log, conn: conn,
		rs: runtimeapi.NewRuntimeServiceClient(conn), is: runtimeapi.NewImageServiceClient(conn),
		restarts: newBackoff(cfg.BackoffInitial.Duration, cfg.BackoffMax.Duration),
		pullBack: newBackoff(cfg.BackoffInitial.Duration, cfg.BackoffMax.Duration),
		pods:     map[types.UID]*podState{}, pulls: map[string]*pullState{}, kills: map[string]bool{},
		imageRecords: map[string]*imageRecord{}}
	r.nodeCPU = *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI)
	r.nodeMem = *resource.NewQuantity(memTotal(), resource.BinarySI)
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := r.rs.Version(vctx, &runtimeapi.VersionRequest{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("cri: containerd at %s does not answer: %w", cfg.Endpoint, err)
	}
	r.version = v.RuntimeName + "://" + v.RuntimeVersion
	if cfg.PauseImage != "" {
		st, err := r.is.ImageStatus(vctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: cfg.PauseImage}})
		switch {
		case err != nil:
			conn.Close()
			return nil, fmt.Errorf("cri: pause image %s: %w", cfg.PauseImage, err)
		case st.Image == nil:
			log.Error("pause image missing: pods cannot start unless containerd can pull it",
				slog.String("image", cfg.PauseImage))
		}
	}
	r.bg, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Version is containerd's name and version, e.g. containerd://1.6.20.
func (r *Runtime) Version() string { return r.version }

// Close stops the probes and pulls, waits for them and closes the
// connection. Containers keep running.
func (r *Runtime) Close() error {
	r.cancel()
	r.mu.Lock()
	var probers []*prober
	for _, ps := range r.pods {
		if ps.prober != nil {
			probers = append(probers, ps.prober)
		}
	}
	r.mu.Unlock()
	for _, p := range probers {
		p.stop()
	}
	r.wg.Wait()
	return r.conn.Close()
}

// Start lists the containers every RelistPeriod until ctx ends and calls
// Config.Notify when one appeared, disappeared or changed state, so that
// exits are handled at once rather than at the next resync. It also
// collects unused images every ImageGCPeriod.
func (r *Runtime) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		r.runGC(ctx)
	}()
	defer func() {
		cancel()
		<-gcDone
	}()
	t := time.NewTicker(r.cfg.RelistPeriod.Duration)
	defer t.Stop()
	var last map[string]runtimeapi.ContainerState
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout.Duration)
		list, err := r.rs.ListContainers(cctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
			LabelSelector: map[string]string{labelManaged: managedBy}}})
		cancel()
		if err != nil {
			if !failing && ctx.Err() == nil {
				r.log.Warn("relist containers failed", slog.Any("err", err))
			}
			failing = true
			continue
		}
		failing = false
		now := make(map[string]runtimeapi.ContainerState, len(list.Containers))
		for _, c := range list.Containers {
			if r.ours(c.Labels) {
				now[c.Id] = c.State
			}
		}
		if last != nil && !mapsEqual(last, now) {
			r.notify()
		}
		last = now
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// event records an event about pod, or its container named container if
// not empty.
func (r *Runtime) event(pod *corev1.Pod, container string, t events.Type, reason events.Reason, format string, args ...any) {
	if r.cfg.Events == nil || pod == nil {
		return
	}
	r.cfg.Events.Record(events.Eventf(events.PodObject(pod, container), t, reason, format, args...))
}

func (r *Runtime) notify() {
	if r.cfg.Notify != nil {
		r.cfg.Notify()
	}
}

// notifyAfter calls Notify after d (a back-off's end).
func (r *Runtime) notifyAfter(d time.Duration) {
	if r.cfg.Notify != nil {
		time.AfterFunc(d+50*time.Millisecond, r.cfg.Notify)
	}
}

// call bounds one CRI call.
func (r *Runtime) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.RequestTimeout.Duration)
}

// ours reports whether a sandbox or container with labels belongs to this
// node: it carries this node's name, or no node name at all (made by an
// older edgecore; see the package doc).
func (r *Runtime) ours(labels map[string]string) bool {
	n, ok := labels[labelNode]
	return !ok || n == r.cfg.NodeName
}

// Pods implements runtime.Runtime: the UIDs of the pods with a sandbox made
// by this node's edgecore, ready or not, and of the pod directories under
// RootDir without any sandbox (left by a setup or a kill that edgecore's
// stop or a crash cut short: their volumes may be tmpfs holding secrets;
// KillPod unmounts and removes them, as the kubelet cleans orphaned pod
// directories). A sandbox without a node name is never listed, so never
// killed as unknown: it may be another node's.
func (r *Runtime) Pods(ctx context.Context) ([]types.UID, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	list, err := r.rs.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{labelManaged: managedBy}}})
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var uids, legacy []types.UID
	sandboxed := map[types.UID]bool{}
	for _, s := range list.Items {
		u := types.UID(s.Labels[labelPodUID])
		n, labelled := s.Labels[labelNode]
		sandboxed[u] = true
		switch {
		case u == "" || slices.Contains(uids, u):
		case !labelled:
			legacy = append(legacy, u)
		case n == r.cfg.NodeName:
			uids = append(uids, u)
		}
	}
	if len(legacy) > 0 {
		r.mu.Lock()
		logged := r.legacyLogged
		r.legacyLogged = true
		r.mu.Unlock()
		if !logged {
			r.log.Warn("sandboxes without a node label, made by an older edgecore: each is run by the edgecore "+
				"whose store holds its pod, and never killed as unknown; remove those of deleted pods with crictl rmp",
				slog.Any("pods", legacy))
		}
	}
	dirs, err := os.ReadDir(filepath.Join(r.cfg.RootDir, "pods"))
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("list pod directories: %w", err)
	}
	for _, d := range dirs {
		if u := types.UID(d.Name()); d.IsDir() && !sandboxed[u] && validUID(u) {
			uids = append(uids, u)
		}
	}
	slices.Sort(uids)
	return uids, nil
}

// validUID reports whether uid can name a pod's directory and its
// sandboxes' label.
func validUID(uid types.UID) bool {
	return uid != "" && !strings.ContainsAny(string(uid), "/*?[\\")
}

// state returns the pod's state, made on its first sync.
func (r *Runtime) state(pod *corev1.Pod) *podState {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := r.pods[pod.UID]
	if ps == nil {
		ps = &podState{attempts: map[string]uint32{}, conditions: map[corev1.PodConditionType]conditionState{},
			volumesWritten: map[string]bool{}, tokenSkipLogged: map[string]bool{}, lastWaiting: map[string]string{}}
		r.pods[pod.UID] = ps
	}
	ps.pod = pod
	return ps
}

// listSandboxes lists this node's sandboxes of the pod, newest first.
func (r *Runtime) listSandboxes(ctx context.Context, uid types.UID) ([]*runtimeapi.PodSandbox, error) {
	items, _, err := r.podSandboxes(ctx, uid)
	return items, err
}

// podSandboxes lists this node's sandboxes of the pod, newest first, and
// says which other node, if any, has sandboxes of it.
func (r *Runtime) podSandboxes(ctx context.Context, uid types.UID) (items []*runtimeapi.PodSandbox, other string, err error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	list, err := r.rs.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{labelPodUID: string(uid), labelManaged: managedBy}}})
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	for _, s := range list.Items {
		if r.ours(s.Labels) {
			items = append(items, s)
		} else {
			other = s.Labels[labelNode]
		}
	}
	// Newest first.
	slices.SortFunc(items, func(a, b *runtimeapi.PodSandbox) int {
		if a.Metadata.GetAttempt() != b.Metadata.GetAttempt() {
			return int(b.Metadata.GetAttempt()) - int(a.Metadata.GetAttempt())
		}
		return int((b.CreatedAt - a.CreatedAt) / int64(time.Millisecond))
	})
	return items, other, nil
}

// listContainers lists the containers of a sandbox, or of a pod when
// sandboxID is empty.
func (r *Runtime) listContainers(ctx context.Context, uid types.UID, sandboxID string) ([]*runtimeapi.Container, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	list, err := r.rs.ListContainers(cctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		PodSandboxId: sandboxID, LabelSelector: map[string]string{labelPodUID: string(uid), labelManaged: managedBy}}})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return slices.DeleteFunc(list.Containers, func(c *runtimeapi.Container) bool { return !r.ours(c.Labels) }), nil
}

// KillPod implements runtime.Runtime. It stops the probes, stops the
// containers (running preStop hooks, waiting at most grace, all at once),
// stops and removes the sandboxes, and removes the pod's volumes, logs and
// cgroup. A pod whose sandboxes are another node's is left alone, its logs
// and cgroup too.
func (r *Runtime) KillPod(ctx context.Context, uid types.UID, grace time.Duration) error {
	if !validUID(uid) {
		return fmt.Errorf("kill pod: bad uid %q", uid)
	}
	r.mu.Lock()
	ps := r.pods[uid]
	delete(r.pods, uid)
	r.mu.Unlock()
	if ps != nil && ps.prober != nil {
		ps.prober.stop()
	}
	var pod *corev1.Pod
	if ps != nil {
		pod = ps.pod
	}
	sandboxes, other, err := r.podSandboxes(ctx, uid)
	if err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}
	if len(sandboxes) == 0 && other != "" {
		r.log.Warn("not killing another node's pod", slog.String("uid", string(uid)), slog.String("node", other))
		return nil
	}
	containers, err := r.listContainers(ctx, uid, "")
	if err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}
	var g errgroup.Group
	for _, c := range containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		r.event(pod, c.Metadata.GetName(), events.Normal, events.Killing, "Stopping container %s", c.Metadata.GetName())
		g.Go(func() error { return r.stopContainer(ctx, pod, c.Id, c.Metadata.GetName(), grace) })
	}
	errs := []error{g.Wait()}
	for _, sb := range sandboxes {
		errs = append(errs, r.removeSandbox(ctx, sb.Id))
	}
	if matches, _ := filepath.Glob(filepath.Join(r.cfg.PodLogDir, "*_"+string(uid))); len(matches) > 0 {
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				errs = append(errs, fmt.Errorf("remove logs: %w", err))
			}
		}
	}
	dir, err := r.removePodDir(string(uid))
	if err != nil {
		errs = append(errs, fmt.Errorf("remove volumes: %w", err))
	}
	if err := r.removeCgroup(string(uid)); err != nil {
		errs = append(errs, err)
	}
	r.restarts.forgetPrefix(string(uid) + "/")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kill pod %s: %w", uid, err)
	}
	switch {
	case len(sandboxes) > 0:
		r.log.Info("pod killed", slog.String("uid", string(uid)), slog.Int("sandboxes", len(sandboxes)))
	case dir:
		r.log.Info("pod directory without a sandbox removed", slog.String("uid", string(uid)))
	}
	return nil
}

// stopContainer runs the preStop hook, if the pod is known and has one,
// and stops the container, waiting at most grace (hook included) before
// SIGKILL.
func (r *Runtime) stopContainer(ctx context.Context, pod *corev1.Pod, id, name string, grace time.Duration) error {
	start := time.Now()
	if pod != nil {
		if c := findContainer(pod, name); c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && grace > 0 {
			hctx, cancel := context.WithTimeout(ctx, grace)
			if err := r.runHandler(hctx, pod, c, id, c.Lifecycle.PreStop, grace); err != nil {
				r.log.Warn("preStop hook failed", slog.String("pod", pod.Namespace+"/"+pod.Name),
					slog.String("container", name), slog.Any("err", err))
				r.event(pod, name, events.Warning, events.FailedPreStopHook, "PreStopHook failed: %v", err)
			}
			cancel()
		}
	}
	left := grace - time.Since(start)
	timeout := int64(0)
	if left > 0 {
		timeout = int64((left + time.Second - 1) / time.Second)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(timeout)*time.Second+r.cfg.RequestTimeout.Duration)
	defer cancel()
	if _, err := r.rs.StopContainer(cctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
		return fmt.Errorf("stop container %s: %w", name, err)
	}
	return nil
}

func (r *Runtime) removeSandbox(ctx context.Context, id string) error {
	cctx, cancel := r.call(ctx)
	defer cancel()
	if _, err := r.rs.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", id, err)
	}
	if _, err := r.rs.RemovePodSandbox(cctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	return nil
}

// podCgroup is the pod's cgroup below each hierarchy.
func (r *Runtime) podCgroup(uid string) string {
	return r.cfg.CgroupParent + "/pod" + uid
}

// removeCgroup removes the pod cgroup, which containerd leaves behind, in
// every hierarchy (cgroup v1) or the unified one (v2).
func (r *Runtime) removeCgroup(uid string) error {
	rel := strings.TrimPrefix(r.podCgroup(uid), "/")
	var bases []string
	if _, err := os.Stat(filepath.Join(r.cfg.CgroupRoot, "cgroup.controllers")); err == nil {
		bases = []string{r.cfg.CgroupRoot}
	} else {
		entries, _ := os.ReadDir(r.cfg.CgroupRoot)
		for _, e := range entries {
			if e.IsDir() {
				bases = append(bases, filepath.Join(r.cfg.CgroupRoot, e.Name()))
			}
		}
	}
	var errs []error
	for _, b := range bases {
		if err := rmdirTree(filepath.Join(b, rel)); err != nil {
			errs = append(errs, fmt.Errorf("remove pod cgroup: %w", err))
		}
	}
	return errors.Join(errs...)
}

// rmdirTree removes a cgroup directory and its children, deepest first,
// retrying briefly while the last processes leave.
func rmdirTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	} else if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := rmdirTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for i := 0; ; i++ {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || i == 20 {
			return fmt.Errorf("rmdir %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
