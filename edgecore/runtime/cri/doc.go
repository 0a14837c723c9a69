// Package cri is the runtime.Runtime that runs pods in containerd through
// the Kubernetes CRI API (k8s.io/cri-api, runtime v1, over containerd's unix
// socket).
//
// SyncPod is level-based, like the kubelet's pod workers: each call lists
// what containerd holds for the pod (sandboxes and containers found by the
// io.kubernetes.pod.uid label), compares it with the spec and acts:
//
//   - a pod sandbox (pause container, network, hostname, DNS, host ports)
//     is created when none is ready;
//   - volumes are prepared under <RootDir>/pods/<uid>/volumes/<name>;
//     configMap, secret, projected and downwardAPI volumes are written
//     atomically (a ..data symlink swapped to a new timestamped directory)
//     and refreshed on every sync, so a changed ConfigMap reaches running
//     containers;
//   - init containers run one at a time, in order, to completion; then the
//     containers start;
//   - ephemeral containers (kubectl debug) start in the running sandbox,
//     each once, never restarted, in the PID namespace of their
//     targetContainerName (the CRI's TARGET mode);
//   - an exited container is restarted as the restart policy says, after an
//     exponential back-off (CrashLoopBackOff), and a container whose liveness
//     or startup probe failed is killed and restarted;
//   - the status (phase, conditions, container states, restart counts, pod
//     IP) is computed from containerd's view and the probe results.
//
// Restart counts are the attempt numbers in the containers' CRI metadata.
// Images are checked with ImageStatus before any pull; pulls run in the
// background with a back-off (ErrImagePull, then ImagePullBackOff), and a
// present image is used when an Always pull fails.
//
// Probes (exec, httpGet, tcpSocket, grpc) run in goroutines owned by the
// pod, started on its first sync and joined by KillPod or Close. Start runs
// a relist loop that calls Config.Notify when a container changes state, so
// the pod manager syncs at once instead of at its next resync.
//
// KillPod stops containers with the grace period, removes the sandboxes,
// the pod's volume directory, its log directory and its pod cgroup, which
// containerd leaves behind. No image is ever removed.
//
// Calls for different pods may run at once (pods.Manager syncs pods in
// parallel); what a pod's calls keep between syncs belongs to the one call
// running for it, and what pods share (image pulls, back-offs, background
// kills) is guarded by locks.
//
// Several edgecores may share one containerd (the e2e tests' edges do):
// every sandbox and container carries its node's name in the
// tether.io/node label, and a runtime lists, adopts, syncs and kills only
// those with its own node name. Sandboxes and containers made by an older
// edgecore carry no node name. SyncPod and KillPod still take them, so an
// upgraded edgecore adopts the containers of the pods in its store instead
// of starting them a second time; that is safe because a pod's UID names
// one pod bound to one node (a static pod's UID hashes its node's name).
// Pods never lists them, so they are never killed as unknown: an edgecore
// cannot tell whether such a sandbox is another node's. One whose pod was
// deleted while the old edgecore was down keeps running; Pods logs the
// unlabelled sandboxes once, and an operator removes them with crictl rmp.
package cri
