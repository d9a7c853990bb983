// Package stats sums an agent's HTTP calls per edge (caller workload →
// callee service) over a window, for the summary the agent sends to the
// control plane's dashboard.
package stats
