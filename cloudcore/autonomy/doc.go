// Package autonomy keeps the cloud from evicting an edge node's pods just
// because the node's link dropped. The edge keeps running them; without this
// package Kubernetes deletes them after 300s offline and the workload
// controllers create replacements, so the node finds its pods gone when it
// returns (KubeEdge #4048).
//
// # What evicts, and what this changes
//
// When a node stops renewing its Lease for --node-monitor-grace-period, the
// node lifecycle controller in kube-controller-manager sets its Ready
// condition to Unknown and taints it node.kubernetes.io/unreachable:NoExecute
// (node.kubernetes.io/not-ready:NoExecute when Ready is False). The
// taint-eviction controller then deletes every pod on the node that does not
// tolerate the taint forever: for each taint it takes the first of the
// pod's tolerations that matches, and evicts after the smallest
// tolerationSeconds among them. The DefaultTolerationSeconds admission
// plugin gives every pod that tolerates neither taint a toleration of each
// with tolerationSeconds 300 (--default-unreachable-toleration-seconds,
// --default-not-ready-toleration-seconds).
//
// The Controller watches pods bound to nodes labelled
// node-role.kubernetes.io/edge and patches their tolerations (Rewrite) so that
// the first toleration matching each of the two taints has no
// tolerationSeconds: the pod tolerates the disconnect forever, and the
// taint-eviction controller cancels an eviction it had already scheduled.
// API validation lets a running pod change only the tolerationSeconds of its
// tolerations and add new ones, which is all Rewrite does. Pods of other
// nodes are never touched. Other NoExecute taints (a drain, an operator's
// own taint) still evict as before.
//
// The node lifecycle controller taints NoExecute only in a zone
// (topology.kubernetes.io/region and zone labels) that is not disrupted: if
// no node of the zone is Ready it blames its own connectivity and lifts the
// taints, and in a cluster of at most 50 nodes it stops tainting while more
// than 2 and at least 55% of the zone's nodes are not Ready. So a site whose
// nodes share a zone and lose the link together is spared anyway; a single
// edge node among Ready ones, the common case, is not. This package does not
// rely on either.
//
// The node lifecycle controller also marks the node's pods not Ready (status
// only: endpoints drop them, which is right while they cannot be reached);
// the edge reports every pod's status again when it reconnects. Nothing else
// in kube-controller-manager deletes a pod because its node is unreachable
// (a scale-down does prefer not-ready pods, but that is a user's request). The
// pod garbage collector deletes the pods of a Node object that is deleted,
// and of a node tainted node.kubernetes.io/out-of-service: both are an
// operator's decision that the node is gone.
//
// # Opting out
//
// OptOutKey ("tether.io/evict-on-disconnect") set to "true" as a pod
// annotation, or as a label or annotation of a node, keeps Kubernetes'
// behaviour for that pod or for every pod on that node: for a workload that
// must fail over to another node, at the cost of a restart when the node
// returns. The opt-out is read before the rewrite; it does not undo one
// already made (tolerations cannot be removed from a pod), so set it in the
// pod template (a change to the template rolls out new pods anyway) or label
// the node before its pods land.
//
// # How it runs
//
// Level-based, as a controller-runtime Reconcile but on plain client-go: its
// own pod informer (bound pods only) and node informer, both trimmed to the
// fields it reads; event handlers only queue pod keys (a pod whose
// tolerations need a rewrite; every pod of a node that appears or whose edge
// label or opt-out changes); one worker takes keys from a rate-limiting
// workqueue and calls Reconcile, which compares the pod's tolerations with
// what Rewrite wants and sends a JSON merge patch of spec.tolerations with
// the pod's uid and resourceVersion as preconditions, at most PatchQPS per
// second. A conflict or failure is retried with per-pod back-off.
//
// A pod is patched once, right after it is bound, so the edge receives it
// twice (bound, then patched). A pod created while cloudcore is down is
// patched when it starts; it is evicted only if its node is also unreachable
// for longer than its tolerationSeconds before that.
package autonomy
