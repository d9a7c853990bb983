// Package l7 is the HTTP half of the node proxy (DESIGN §3, L7).
//
// On the calling side, Client serves an application's connection to a
// service as HTTP/1.1 or h2c and sends each request on its own: picked
// endpoint (power of two choices), retries to another endpoint under a
// retry budget, service and per-route timeouts, a circuit breaker per
// destination service, trace headers. On the called side, Server admits
// requests under the service's rate limit and forwards them to the
// application. Both report every request as an api.Call.
//
// Forwarding is mostly net/http's: httputil.ReverseProxy (hop-by-hop
// headers, upgrades, trailers, flushing) over http.Transport (keep-alive
// pools, 100-continue). The common bodiless request takes a shorter path
// with the same rules (forward.go, transport.go), parsed by net/http
// still. This package decides where and whether a request goes;
// the agent supplies how bytes reach an endpoint (in-process on the same
// node, an HBONE stream to another).
package l7
