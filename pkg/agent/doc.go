// Package agent composes everything that runs on a node: the eBPF datapath,
// the shared in-process proxy with its per-pod listeners, the local API, and
// the hand-over to a successor agent. It owns their lifecycles.
package agent
