// Package bench holds what `make bench` produces and how it measures the
// processes it runs: the Report written as JSON (stable field names, the
// machine it ran on), its short text table, a PNG plot of pod dispatch
// latency against node count, and a Sampler that follows the resident
// memory and CPU time of another process (cloudcore run as its own binary)
// through /proc.
//
// The suite itself, which drives the simulator and fills a Report, is the
// command in cmd/tether-bench. This package has no opinion on how figures
// were obtained; it keeps them, checks them against their targets and shows
// them. A figure the run could not obtain is recorded as not available with
// the reason, never as a zero.
package bench
