// Package cni is hms-node's chained CNI plugin (`hms-node cni`, installed as
// hms-cni) and its installer: on ADD, DEL and CHECK it tells the node's
// agent, over the agent's unix socket, which pod a network namespace
// belongs to; the agent decides membership. It also adds itself to, and
// removes itself from, the node's CNI configuration.
package cni
