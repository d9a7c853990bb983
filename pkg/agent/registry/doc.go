// Package registry holds the agent's view of the mesh registry (services,
// instances, externals, limits, routes) and the client that keeps it in sync
// over one Agents.Connect stream to a control-plane replica.
//
// Lookups (LookupVIP, LookupName, Pick) run on every connection, so they
// take only a read lock and allocate nothing.
package registry
