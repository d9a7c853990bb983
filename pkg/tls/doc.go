// Package mtls is the mesh's identity layer: SPIFFE IDs, the mesh CA and its
// sealed root key, certificate issuance, peer verification, TLS 1.3 configs,
// rotating certificates and bootstrap join tokens.
//
// Certificates name the node they were issued to in the Subject, as an
// OrganizationalUnit "hms-node:<node>" (see NodeOf), beside exactly one
// SPIFFE URI SAN: a second URI SAN would make the identity ambiguous, and the
// Subject is covered by the CA's signature, so only the CA can set it. Peers
// use it to refuse every certificate of a revoked node.
//
// The package knows nothing of eBPF, etcd or the registry: callers supply
// storage, revocation lists and issuance transports through plain values and
// function hooks.
package mtls
