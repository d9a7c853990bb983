// Package e2e holds the end-to-end tests and benchmarks of hms-node: real
// agents (the built binary) on simulated nodes of internal/testbed, real
// curl and real sockets inside pod network namespaces.
package e2e
