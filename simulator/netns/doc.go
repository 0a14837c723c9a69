// Package netns builds small networks of Linux network namespaces for the
// simulator and the benchmarks, so that cloudcore and the hollow edge nodes
// talk over a link with latency, loss and partitions instead of loopback.
// It needs root.
//
// A Network makes namespaces (ip netns add) named <prefix><pid>-<name>, and
// point-to-point Links between two of them, or between one and the host's
// own namespace. Close removes everything the Network made; Sweep removes
// the namespaces of earlier runs whose process is gone (a crash or SIGKILL
// skips Close). Every address is in 198.18.0.0/15, the range RFC 2544 sets
// aside for benchmarks, and traffic stays inside the namespaces of the run.
//
// A Link is emulated in user space: each end is a TUN device in its
// namespace, and this process moves every IP packet from one end to the
// other after the link's delay, dropping a share of them (loss) or all of
// them (partition). tc's netem qdisc would do the same in the kernel, but
// the kernel of these machines is built without it (CONFIG_NET_SCH_NETEM is
// not set: "Specified qdisc kind is unknown"); TUN is in every kernel. The
// link counts the IP bytes it carries in each direction, headers included.
//
// Processes and sockets are put into a namespace in two ways:
// Namespace.Command runs a program there (ip netns exec), for cloudcore as
// its own process; Namespace.Listen and Namespace.DialContext open sockets
// there from this process (setns on a locked OS thread; the socket stays in
// the namespace it was made in), for hollow nodes whose dialer is a
// function. Forward relays TCP connections from a listener in one namespace
// to an address reachable from another, e.g. the API server on the host's
// loopback for a cloudcore run inside a namespace.
package netns
