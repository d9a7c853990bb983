// Package testbed builds simulated nodes and pods out of network namespaces,
// veth pairs, bridges and cgroup v2 directories on one kernel, for the
// project's privileged tests and demos.
//
// Layout of a bed (every name carries the creating pid, so a later run can
// sweep what a crashed one left behind):
//
//	fabric netns  <prefix>-<pid>-<n>-fab   bridge joining all nodes, 10.250.255.0/24
//	node netns    <prefix>-<pid>-<n>-n<i>  bridge with 10.250.<i>.1/24, ip_forward=1,
//	                                        uplink 10.250.255.<i>/24 into the fabric
//	pod netns     <prefix>-<pid>-<n>-n<i>p<k>  eth0 10.250.<i>.<k+1>/24 on the node bridge,
//	                                        route 10.250.0.0/16 via the node, no default route
//	cgroups       <cgroup2>/<prefix>-<pid>-<n>/<node>/<pod>
//
// Traffic never leaves the machine: pods have no default route and
// 240.240.0.0/16 (the mesh VIP range) is blackholed in every namespace of the
// bed and, while any bed of the process is open, in the root netns.
package testbed
