// Package state persists the node agent's enrollments under --state-dir, so
// that an agent started after a crash re-creates the listeners of every pod
// the pinned eBPF programs still steer to it.
package state
