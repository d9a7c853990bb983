package l7

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Transport is an HTTP/1.1 RoundTripper for the proxy's common case — a
// request without a body or upgrade, like most GETs — that writes the
// request and reads the response in the caller's goroutine over a pooled
// connection. http.Transport hands every request to a write goroutine and
// every response back from a read goroutine per connection; on a busy
// node each of those hand-offs is a wake-up to wait for, and they were a
// large part of what the L7 path added over the L4 one. Anything else
// (bodies, upgrades, Expect) goes to Fallback, which keeps net/http's
// semantics for it.
type Transport struct {
	// Dial opens a connection to addr (host:port).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Fallback serves the HTTP/1 requests the fast path does not.
	Fallback *http.Transport
	// H2, when set, serves gRPC requests (HTTP/2 with an
	// application/grpc content type): they go on as h2c (prior
	// knowledge), since a gRPC server speaks nothing else and needs the
	// trailers. Every other request is sent as HTTP/1.1, which every
	// HTTP application speaks, whatever the client used.
	H2 *http.Transport
	// MaxIdlePerHost bounds the idle connections kept per address
	// (0 = 64); IdleTimeout drops older ones (0 = 60 s).
	MaxIdlePerHost int
	IdleTimeout    time.Duration

	mu   sync.Mutex // guards idle
	idle map[string][]*poolConn
}

// poolConn is one connection of the fast path with its buffers.
type poolConn struct {
	net.Conn
	addr  string // the pool it belongs to
	br    *bufio.Reader
	bw    *bufio.Writer
	since time.Time // when it went idle
}

// fast tells whether req can take the fast path: nothing to send after
// the head, nothing to wait for before it, no connection takeover, and a
// method that may be sent again on a fresh connection when a pooled one
// turns out closed.
func fast(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	if req.URL.Scheme != "http" || req.Close || req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// RoundTrip sends req on a pooled connection when it can, else through
// Fallback.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.H2 != nil && protocolOf(req) == protoGRPC {
		return t.H2.RoundTrip(req)
	}
	if !fast(req) {
		return t.Fallback.RoundTrip(req)
	}
	ctx := req.Context()
	addr := req.URL.Host
	for {
		pc, reused := t.get(addr)
		if pc == nil {
			c, err := t.Dial(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			pc = &poolConn{Conn: c, addr: addr, br: bufio.NewReaderSize(c, 4<<10), bw: bufio.NewWriterSize(c, 4<<10)}
		}
		resp, err := t.send(ctx, pc, req)
		if err == nil {
			return resp, nil
		}
		pc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !reused {
			return nil, err
		}
		// A pooled connection the peer had closed: nothing was answered,
		// and the request has no body, so send it again on a fresh one.
	}
}

// send writes req on pc and reads the response head; the body reads from
// pc, which goes back to the pool once the body is read to its end.
func (t *Transport) send(ctx context.Context, pc *poolConn, req *http.Request) (*http.Response, error) {
	stop := neverStopped
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { pc.Close() }) // cancel = close, like http.Transport
	}
	writeRequestHead(pc.bw, req)
	if err := pc.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	resp, err := http.ReadResponse(pc.br, req)
	for err == nil && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(pc.br, req) // 1xx informational: the final answer follows
	}
	if err != nil {
		stop()
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		stop() // not asked for (no Upgrade sent): the connection is not HTTP any more
		pc.Close()
		return nil, errors.New("l7: unexpected 101 Switching Protocols")
	}
	b := &poolBody{t: t, pc: pc, body: resp.Body, stop: stop, keep: !resp.Close}
	resp.Body = b
	if resp.ContentLength == 0 || req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified {
		b.done(true) // no body to wait for
	}
	return resp, nil
}

// neverStopped is the stop of a request that cannot be cancelled: it
// reports, as a stop does, that the cancel had not happened.
func neverStopped() bool { return true }

// poolBody is a response body on a pooled connection.
type poolBody struct {
	t        *Transport
	pc       *poolConn
	body     io.ReadCloser
	stop     func() bool
	keep     bool // the server keeps the connection open
	released bool
}

func (b *poolBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.done(true)
	} else if err != nil {
		b.done(false)
	}
	return n, err
}

func (b *poolBody) Close() error {
	if b.released {
		return nil
	}
	b.done(false) // not read to its end: the connection is mid-response
	return nil
}

// done releases the connection: back to the pool after a complete
// response, closed otherwise.
func (b *poolBody) done(complete bool) {
	if b.released {
		return
	}
	b.released = true
	if !b.stop() || !complete || !b.keep {
		b.pc.Close() // cancelled meanwhile, or unusable
		return
	}
	b.t.put(b.pc)
}

func (t *Transport) get(addr string) (*poolConn, bool) {
	timeout := t.IdleTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	conns := t.idle[addr]
	for len(conns) > 0 {
		pc := conns[len(conns)-1]
		conns = conns[:len(conns)-1]
		if time.Since(pc.since) < timeout {
			t.idle[addr] = conns
			return pc, true
		}
		pc.Close() // the newest is too old, so are the rest
		for _, old := range conns {
			old.Close()
		}
		conns = nil
	}
	delete(t.idle, addr)
	return nil, false
}

func (t *Transport) put(pc *poolConn) {
	max := t.MaxIdlePerHost
	if max <= 0 {
		max = 64
	}
	addr := pc.addr
	pc.since = time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.idle == nil {
		t.idle = map[string][]*poolConn{}
	}
	if len(t.idle[addr]) >= max {
		pc.Close()
		return
	}
	t.idle[addr] = append(t.idle[addr], pc)
}

// CloseIdleConnections closes the idle connections of both paths.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, conns := range idle {
		for _, pc := range conns {
			pc.Close()
		}
	}
	if t.Fallback != nil {
		t.Fallback.CloseIdleConnections()
	}
	if t.H2 != nil {
		t.H2.CloseIdleConnections()
	}
}

// H2CTransport is an http.Transport that speaks only h2c with prior
// knowledge over the connections dial opens, for Transport.H2.
func H2CTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	t := &http.Transport{
		DialContext:        dial,
		IdleConnTimeout:    60 * time.Second,
		DisableCompression: true, // pass bodies through as the application sent them
		Protocols:          new(http.Protocols),
	}
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}
