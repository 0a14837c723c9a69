// Package controlplane runs a real, local Kubernetes control plane for the
// Tether demo and integration tests: etcd, kube-apiserver and, optionally,
// kube-controller-manager and kube-scheduler, each as a child process.
//
// Start picks free loopback ports (so several control planes can run side by
// side), writes a CA, serving certificate, service-account key and static
// token file into Options.Dir, starts the components in order and waits until
// each one reports healthy. It writes an admin kubeconfig to Dir/kubeconfig.
// Each component logs to Dir/logs/<component>.log.
//
// With Options.AggregationLayer, StartMetricsServer runs metrics-server
// (built by `make kube-binaries` too) as the aggregated metrics.k8s.io API,
// so that kubectl top works against the control plane.
//
// Children run in their own process group and are killed by the kernel if the
// thread that started them dies (Pdeathsig), so a crashed test leaves nothing
// behind. Stop terminates them in reverse order.
//
// The Kubernetes binaries come from tools/kube (see `make kube-binaries`);
// etcd is the Debian etcd-server package.
package controlplane
