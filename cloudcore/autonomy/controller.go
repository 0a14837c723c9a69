package autonomy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"
)

// FieldManager is the field manager of the controller's patches.
const FieldManager = "tether-autonomy"

// Config configures the controller. Zero values take the defaults Validate
// fills in.
type Config struct {
	// Disabled turns the controller off: edge pods keep the tolerations
	// Kubernetes gave them and are evicted tolerationSeconds (300s by
	// default) after their node's link drops.
	Disabled bool `json:"disabled,omitempty"`
	// PatchQPS and PatchBurst bound how fast the controller patches pods
	// (default 20 and 100), so that converting every pod of a large cluster
	// at start does not crowd out status writes.
	PatchQPS   float32 `json:"patchQPS,omitempty"`
	PatchBurst int     `json:"patchBurst,omitempty"`
	// RetryBaseDelay and RetryMaxDelay bound the per-pod back-off after a
	// failed patch (default 100ms and 5m).
	RetryBaseDelay metav1.Duration `json:"retryBaseDelay,omitempty"`
	RetryMaxDelay  metav1.Duration `json:"retryMaxDelay,omitempty"`
}

// Validate rejects bad values and fills in the defaults.
func (c *Config) Validate() error {
	if c.PatchQPS < 0 || c.PatchBurst < 0 {
		return errors.New("patchQPS and patchBurst must not be negative")
	}
	if c.PatchQPS == 0 {
		c.PatchQPS = 20
	}
	if c.PatchBurst == 0 {
		c.PatchBurst = 100
	}
	if c.RetryBaseDelay.Duration < 0 || c.RetryMaxDelay.Duration < 0 {
		return errors.New("retryBaseDelay and retryMaxDelay must not be negative")
	}
	if c.RetryBaseDelay.Duration == 0 {
		c.RetryBaseDelay.Duration = 100 * time.Millisecond
	}
	if c.RetryMaxDelay.Duration == 0 {
		c.RetryMaxDelay.Duration = 5 * time.Minute
	}
	if c.RetryMaxDelay.Duration < c.RetryBaseDelay.Duration {
		return fmt.Errorf("retryMaxDelay %s: shorter than retryBaseDelay %s", c.RetryMaxDelay, c.RetryBaseDelay)
	}
	return nil
}

// Controller rewrites the disconnect tolerations of pods bound to edge
// nodes. Its one worker goroutine owns all its state; the informers' handlers
// only add keys to the queue.
type Controller struct {
	cfg       Config
	client    kubernetes.Interface
	log       *slog.Logger
	factories []informers.SharedInformerFactory
	podsInf   cache.SharedIndexInformer
	nodesInf  cache.SharedIndexInformer
	pods      corelisters.PodLister
	nodes     corelisters.NodeLister
	limiter   flowcontrol.RateLimiter
	queue     workqueue.TypedRateLimitingInterface[types.NamespacedName]
	stats     stats
}

type stats struct {
	patched, added, optedOut, conflicts, errors atomic.Int64
}

// Stats is a copy of the controller's counters.
type Stats struct {
	// Patched counts pods whose tolerations were rewritten.
	Patched int64 `json:"patched"`
	// Added counts tolerations added (on top of those changed in place).
	Added int64 `json:"added"`
	// OptedOut counts reconciles of a pod that needed a rewrite but opted
	// out, itself or through its node.
	OptedOut int64 `json:"optedOut"`
	// Conflicts counts patches refused because the pod changed meanwhile;
	// they are retried.
	Conflicts int64 `json:"conflicts"`
	// Errors counts other failed patches; they are retried with back-off.
	Errors int64 `json:"errors"`
}

const indexNode = "node"

// New builds the controller; nothing runs until Start. resync is the
// informers' resync period (0: none).
func New(client kubernetes.Interface, cfg Config, resync time.Duration, log *slog.Logger) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("autonomy: config: %w", err)
	}
	if cfg.Disabled {
		return nil, errors.New("autonomy: New called with Disabled set")
	}
	c := &Controller{cfg: cfg, client: client, log: log,
		limiter: flowcontrol.NewTokenBucketRateLimiter(cfg.PatchQPS, cfg.PatchBurst)}
	// Own informers, trimmed to the fields plan reads, rather than the
	// dispatcher's: the two packages stay independent, at the cost of a
	// second pod watch.
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
		}),
		informers.WithTransform(trim))
	nodeFactory := informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithTransform(trim))
	c.podsInf = podFactory.Core().V1().Pods().Informer()
	if err := c.podsInf.AddIndexers(cache.Indexers{indexNode: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("autonomy: pod indexer: %w", err)
	}
	c.pods = podFactory.Core().V1().Pods().Lister()
	c.nodesInf = nodeFactory.Core().V1().Nodes().Informer()
	c.nodes = nodeFactory.Core().V1().Nodes().Lister()
	c.factories = []informers.SharedInformerFactory{podFactory, nodeFactory}
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](cfg.RetryBaseDelay.Duration, cfg.RetryMaxDelay.Duration),
		workqueue.TypedRateLimitingQueueConfig[types.NamespacedName]{Name: "cloudcore_autonomy"})
	return c, nil
}

// trim keeps of pods and nodes only what plan reads.
func trim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion,
				DeletionTimestamp: o.DeletionTimestamp, Annotations: only(o.Annotations, OptOutKey)},
			Spec:   corev1.PodSpec{NodeName: o.Spec.NodeName, Tolerations: o.Spec.Tolerations},
			Status: corev1.PodStatus{Phase: o.Status.Phase},
		}, nil
	case *corev1.Node:
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion,
			Labels: only(o.Labels, EdgeRoleLabel, OptOutKey), Annotations: only(o.Annotations, OptOutKey)}}, nil
	}
	return obj, nil
}

func only(m map[string]string, keys ...string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := m[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// Stats returns the controller's counters.
func (c *Controller) Stats() Stats {
	s := &c.stats
	return Stats{Patched: s.patched.Load(), Added: s.added.Load(), OptedOut: s.optedOut.Load(),
		Conflicts: s.conflicts.Load(), Errors: s.errors.Load()}
}

// Start runs the controller until ctx ends; it returns an error only if
// the caches cannot sync.
func (c *Controller) Start(ctx context.Context) error {
	defer func() {
		for _, f := range c.factories {
			f.Shutdown()
		}
	}()
	defer c.queue.ShutDown()
	if _, err := c.podsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.podChanged,
		UpdateFunc: func(_, obj any) { c.podChanged(obj) },
	}); err != nil {
		return fmt.Errorf("autonomy: add pod handler: %w", err)
	}
	if _, err := c.nodesInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.nodeChanged,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := obj.(*corev1.Node)
			if ok1 && ok2 && isEdge(o) == isEdge(n) && nodeOptedOut(o) == nodeOptedOut(n) {
				return
			}
			c.nodeChanged(obj)
		},
	}); err != nil {
		return fmt.Errorf("autonomy: add node handler: %w", err)
	}
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	for _, f := range c.factories {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("autonomy: %v cache did not sync", typ)
			}
		}
	}
	c.log.Info("autonomy controller started", slog.Float64("patchQPS", float64(c.cfg.PatchQPS)))
	var wg sync.WaitGroup
	wg.Go(func() {
		for c.processNext(ctx) {
		}
	})
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// podChanged queues a pod whose tolerations need a rewrite; whether it
// should have one is for Reconcile to say.
func (c *Controller) podChanged(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
		return
	}
	if _, changed := Rewrite(p.Spec.Tolerations); changed {
		c.queue.Add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	}
}

// nodeChanged queues the pods of a node that appeared, or whose edge label
// or opt-out changed.
func (c *Controller) nodeChanged(obj any) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	objs, err := c.podsInf.GetIndexer().ByIndex(indexNode, n.Name)
	if err != nil {
		c.log.Error("pods by node", slog.String("node", n.Name), slog.Any("err", err))
		return
	}
	for _, o := range objs {
		c.podChanged(o)
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.Reconcile(ctx, key); err != nil {
		if ctx.Err() == nil {
			c.queue.AddRateLimited(key)
		}
		return true
	}
	c.queue.Forget(key)
	return true
}

// errConflict is Reconcile's answer when the pod changed under its patch.
var errConflict = errors.New("pod changed meanwhile")

// Reconcile brings one pod's tolerations to what plan wants, from the
// informers' view of the pod and its node. An error means: try again later.
func (c *Controller) Reconcile(ctx context.Context, key types.NamespacedName) error {
	pod, err := c.pods.Pods(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var node *corev1.Node
	if pod.Spec.NodeName != "" {
		if node, err = c.nodes.Get(pod.Spec.NodeName); apierrors.IsNotFound(err) {
			node = nil
		} else if err != nil {
			return err
		}
	}
	want, skip := plan(pod, node)
	if skip == SkipPodOptOut || skip == SkipNodeOptOut {
		if _, changed := Rewrite(pod.Spec.Tolerations); changed {
			c.stats.optedOut.Add(1)
		}
	}
	if want == nil {
		return nil
	}
	patch, err := json.Marshal(map[string]any{
		// uid and resourceVersion are preconditions: the patch applies
		// to exactly the pod plan looked at, or fails with a conflict.
		"metadata": map[string]any{"uid": pod.UID, "resourceVersion": pod.ResourceVersion},
		"spec":     map[string]any{"tolerations": want},
	})
	if err != nil {
		return fmt.Errorf("autonomy: encode patch: %w", err)
	}
	if err := c.limiter.Wait(ctx); err != nil {
		return err
	}
	_, err = c.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: FieldManager})
	log := c.log.With(slog.String("pod", key.String()), slog.String("node", pod.Spec.NodeName))
	switch {
	case err == nil:
		added := len(want) - len(pod.Spec.Tolerations)
		c.stats.patched.Add(1)
		c.stats.added.Add(int64(added))
		log.Info("pod tolerates disconnection", slog.Int("added", added))
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		c.stats.conflicts.Add(1)
		log.Debug("patch conflict, will retry", slog.Any("err", err))
		return errConflict
	case ctx.Err() != nil:
		return ctx.Err()
	default:
		c.stats.errors.Add(1)
		log.Error("patch tolerations", slog.Any("err", err))
		return err
	}
}
