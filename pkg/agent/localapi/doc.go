// Package localapi is the node agent's local API: HTTP/1.1 and JSON over a
// unix socket (default /var/run/hms/agent.sock, mode 0600), with every
// caller checked by SO_PEERCRED, and the client the CLI uses to reach it.
package localapi

// DefaultSocket is where the agent listens unless --socket says otherwise.
const DefaultSocket = "/var/run/hms/agent.sock"
