// Package control is the hms-node control plane: the service registry on
// etcd (embedded or external), VIP allocation, the mesh CA (a root sealed in
// etcd with a key-encryption key and shared by every replica, or an
// operator's intermediate), and the gRPC API over TLS 1.3 that the CLI
// (Registry, Identity as the admin) and the node agents (Agents, Identity
// as a node) talk to. Every call is authorized by the caller's certificate;
// Identity.Join alone is authenticated by a one-time bootstrap token.
package control
