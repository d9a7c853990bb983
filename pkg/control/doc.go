// Package control is the hms-node control plane: the service registry on
// etcd (embedded or external), VIP allocation, and the gRPC API that the CLI
// (Registry) and the node agents (Agents) talk to.
package control
