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
// Both ends run the same small HTTP/2 connection of our own (mux.go) that
// carries only CONNECT streams: x/net's Framer and hpack do the framing,
// while the stream table and flow control are ours. x/net's Transport and
// Server hand every frame between goroutines (a request-body goroutine, a
// serve loop, a goroutine per write), which cost more CPU per request
// than the TLS itself; here a stream's Write frames and flushes in the
// caller's goroutine, and one read loop per connection fills each
// stream's buffer, which Read takes from. The read loop never writes to
// the socket (acks, pings and resets go through a queue and one writer
// goroutine), so a peer that stops reading cannot stall it.
//
// Windows: 4 MiB per stream, 32 MiB per connection, given back as the
// reader consumes, so one stalled tunnel fills its own window and the
// others on the connection go on. Frames up to 1 MiB. The server relay
// uses pooled 64 KiB buffers and plain Read/Write loops, never io.Copy
// between TCP conns (splice moves nothing on sk_msg-redirected sockets).
//
// # Half-close
//
// Either end's CloseWrite sends END_STREAM; the other end reads EOF and
// can go on sending, both ways, as over TCP: the server relay passes the
// application's FIN on and keeps relaying the client's bytes.
//
// # Deadlines
//
// Tunnel conns keep read and write deadlines as TCP conns do: past one,
// Read (waiting for data) or Write (waiting for flow-control window)
// fails with os.ErrDeadlineExceeded, and the stream stays usable once the
// deadline is moved. net/http's server relies on this to interrupt its
// background read.
package hbone
