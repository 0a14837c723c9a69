// Package simulator runs thousands of hollow edge nodes in one process
// against a real cloudcore and a real Kubernetes control plane, drives them
// with scenario scripts and measures what the benchmarks report.
//
// # Design
//
// A Sim has three parts:
//
//   - The control plane: etcd, kube-apiserver, kube-controller-manager and
//     kube-scheduler started by package controlplane, or any cluster given
//     by a kubeconfig. The Sim watches its run's pods (one namespace, named
//     after the run) and its Nodes (metadata only, by SimLabel) with
//     informers.
//   - One cloudcore, in this process (its hub's counters are readable) or
//     as its own process from the cloudcore binary (its memory and CPU are
//     its own, read from /proc). Either listens on the same loopback port
//     across restarts.
//   - The fleet: N hollow nodes. Each is the real edgecore stack from
//     edgecore.New and Run (store, agent with its websocket tunnel, pod
//     manager, outbox) with the in-memory runtime (package
//     edgecore/runtime/fake), no metaserver and no static pods, and its own
//     bbolt file under Config.Dir (tmpfs by default). Nothing in a hollow
//     node is simulated but the containers.
//
// Each node has an identity of its own, as a real edge node has after
// `edgecore join`: Enroll (which Connect calls for the nodes it starts)
// makes its key, registers its Node (with SimLabel and the identity
// annotation the hub checks) and issues its client certificate from
// cloudcore's CA, which lives in a Secret (package cloudcore/certs) that the
// Sim loads, or creates before cloudcore does. Enrollment runs 32 nodes at a
// time and is timed apart from the connect time; a node keeps its key and
// certificate, in memory, across restarts (reboot-offline, restart-hub).
//
// A node's link goes through a wire, set as its dialer's NetDial:
// a net.Conn wrapper that counts bytes (TLS records) and can be cut (the
// connection closes at once, dials fail until healed). It costs no
// goroutine and no socket, so ten thousand nodes cost ten thousand client
// sockets and the goroutines edgecore needs (five a node: Run, the pod
// manager, the node monitor, the agent and its session's reader), nothing
// more. Rebooting a
// node offline stops its edgecore, keeps its store, and starts it again
// with an empty runtime and its link cut.
//
// Everything talks over this process's loopback unless Config puts
// cloudcore and the nodes in network namespaces (CloudNamespace,
// NodeNamespace, HubHost): package simulator/netns makes two joined by an
// emulated link, with delay, loss and partitions, whose counters are the
// nodes' traffic at the IP layer; package simulator/netns/netnscmd gives
// scripts the link commands (`tether-sim --netns`, and
// simulator/netns/netnscmd/testdata).
//
// # Measurements
//
// Every moment is taken on this process's clock. The dispatch time of a
// pod runs from its being bound to a node (the Sim's informer, on the same
// watch stream the hub's dispatcher follows, seeing it so, or the create
// call of a pod created bound returning, whichever is first) to the node's
// agent committing it (edgecore.Config.CommitHook), just before the node
// acknowledges it. Create to Running runs from the create call to the
// informer seeing the pod Running, which the node's status report puts
// there. A reconnect storm (RestartHub, WaitResynced) runs from the
// restarted hub accepting its first node (the wire's connect time) until
// every node that was connected has a new session and its ResyncDone; its
// size is the sum of those ResyncDone reports and of the nodes' link bytes
// from the stop. Idle bandwidth is the links' bytes over a quiet window.
// Memory per node is this process's growth from before the first node to
// after WaitConnected.
//
// # Scenarios
//
// Scenarios are text scripts in the format of
// github.com/cockroachdb/datadriven: a command line, "----", and the
// expected output. Exec runs one command; ParseScript reads a file. The
// integration tests run testdata/*.txt with datadriven (-rewrite updates
// the expected output); cmd/tether-sim runs any script, testdata/bench/*.txt
// among them, showing progress lines and a summary. Commands:
//
//	nodes n=N                             add N nodes (not started)
//	enroll [nodes=S]                      give nodes their identity: a key, the
//	                                      Node registered, a client certificate
//	connect [nodes=S] [rate=R/s]          start nodes, R a second (enrolling
//	                                      those that are not, first)
//	wait-connected [timeout=D]            every running node with an intact link
//	                                      connected and registered
//	pods create n=N [rate=R/s] [nodes=S]  create pods bound round-robin to nodes
//	pods delete (n=N|all) [rate=R/s] [nodes=S]
//	                                      delete pods gracefully (through the edge)
//	cut [nodes=S]                         cut links (default every node)
//	heal [nodes=S]                        heal links (default every cut one)
//	reboot-offline nodes=S                restart edgecore with its store and the
//	                                      link cut, runtime empty
//	restart-hub [down=D]                  stop cloudcore, wait D, start it again
//	wait-resynced [timeout=D]             the storm after restart-hub is over
//	wait-ready [timeout=D]                every edge Node in the API Ready, its
//	                                      Lease renewed (since the storm's return
//	                                      after wait-resynced; default 5m)
//	idle [for=D]                          measure idle bandwidth over D
//	kill-replica i=N [signal=term|kill] [timeout=D]
//	                                      stop replica N (Config.Replicas) and wait
//	                                      until its nodes are back on the others:
//	                                      reconnect p50/p99 from the signal
//	start-replica i=N                     start replica N again
//	wait-balanced [timeout=D] [quiet=D2]  wait until the nodes are even over the
//	                                      replicas up (rebalancing) and none
//	                                      moved for D2 (default 10s)
//	mark-storm                            (--join-hub) the other Sim is about to
//	                                      restart the hub: wait-resynced then
//	                                      measures this Sim's nodes' storm
//	signal file=F                         create file F (for another Sim's await)
//	await file=F [timeout=D]              wait until file F exists
//	reset-latencies                       latencies from here on only
//	sleep for=D
//	expect METRIC=V|METRIC<=V|METRIC>=V ... [within=D] [stable=D2] [nodes=S]
//	                                      check metrics (see MetricDocs), waiting
//	                                      up to D for all of them to hold (for
//	                                      D2 without a break)
//	report                                the summary (not deterministic: for
//	                                      the command line, not for tests)
//
// A node selection S is all, an index, a range lo-hi, or a list (0-9, 12).
// Commands report failed expectations in their output ("FAIL: ..."), so a
// script shows every result; an error is a command that could not run.
//
// # Extending
//
// Config.Edge adjusts each hollow node's edgecore configuration (devices
// on, with a broker, for some nodes) and Config.Commands adds scenario
// commands (device updates, twin checks): the places for device
// simulation, which the fleet does not do yet.
//
// # Limits
//
// A hollow node holds two file descriptors (its socket and its store;
// three with cloudcore in the same process), so a process's RLIMIT_NOFILE
// bounds the fleet: Connect refuses to go past it. A second Sim joins the
// first one's hub (Config.Hub) to add more nodes from another process.
package simulator
