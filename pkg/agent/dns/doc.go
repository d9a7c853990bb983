// Package dns is the mesh DNS server the agent runs on each pod's in-pod
// 127.0.0.1:15053 and [::1]:15053 sockets: it answers mesh names from the
// registry and forwards everything else to the node's upstream resolvers.
package dns
