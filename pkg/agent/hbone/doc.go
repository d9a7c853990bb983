// Package hbone speaks HBONE, Istio ambient's tunnel protocol: HTTP/2
// CONNECT over mutual TLS 1.3 to a pod's port 15008.
//
// The client side is a [Pool] of HTTP/2 connections keyed by (source
// identity, destination identity, destination IP); [Pool.Connect] opens one
// CONNECT stream per tunnel and returns it as a [net.Conn]. The server side,
// [Server], accepts TLS on a pod's 15008 listener, asks its Handle hook for
// the application connection and relays bytes both ways. TLS configuration
// (certificates, peer verification) always comes from the caller; this
// package owns the HTTP/2 framing, the pooling and the relay.
//
// # Goroutines and buffering
//
// Client, per tunnel: none of ours. x/net runs one goroutine per stream that
// copies the request body (our io.Pipe) into DATA frames and flushes after
// each frame, plus one read loop per connection that feeds the response
// body. Tunnel Write hands bytes synchronously to that goroutine (io.Pipe
// has no buffer), so nothing is held back and writes are backpressured by
// HTTP/2 flow control.
//
// Server, per tunnel: x/net's handler goroutine copies app → client and
// flushes after every write; one goroutine of ours copies client → app.
// Both use pooled 32 KiB buffers and plain Read/Write loops, never io.Copy
// between TCP conns (splice moves nothing on sk_msg-redirected sockets).
// The handler joins its goroutine before returning, so no goroutine
// outlives a tunnel.
//
// # Half-close
//
// Client CloseWrite ends the request body (END_STREAM); the server half-
// closes the application connection and keeps relaying the other way.
// The reverse direction is weaker: x/net's server can end a response only
// by returning from the handler, and then resets the request side
// (RST_STREAM NO_ERROR, RFC 9113 §8.1). So when the application closes its
// write side, the client reads EOF promptly, but bytes it sends afterwards
// are dropped, as if the application had closed the connection fully.
//
// # Deadlines
//
// Tunnel conns accept SetDeadline, SetReadDeadline and SetWriteDeadline
// and ignore them (they return nil): an HTTP/2 stream cannot time out a
// blocked Read without resetting itself. Relays enforce idle timeouts with
// their own timers and Close, which unblocks Read and Write at once.
package hbone
