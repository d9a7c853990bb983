// Package datapath loads, attaches and pins the hms-node eBPF programs and
// gives the agent typed access to their maps: enrollments, original
// destinations, inbound listeners and decision counters. It knows nothing
// of TLS or the registry.
package datapath
