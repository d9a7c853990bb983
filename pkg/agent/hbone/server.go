package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// Request describes one accepted CONNECT for Server.Handle.
type Request struct {
	Authority string              // :authority, "<endpoint-ip>:<port>"
	Header    http.Header         // request headers (Forwarded, Traceparent, ...)
	State     tls.ConnectionState // the caller's TLS state; PeerCertificates name its identity
	Local     net.Addr            // this pod's address on the HBONE connection
	Remote    net.Addr            // the caller's address on the HBONE connection
}

// Server is the HBONE server on a pod's 15008 listener. Fields must be set
// before Serve and not changed afterwards.
type Server struct {
	// TLS is the mutual TLS 1.3 config (the caller builds it; NextProtos
	// must include "h2"). Connections that negotiate anything else are
	// closed.
	TLS *tls.Config
	// Handle returns the connection to the application for an accepted
	// tunnel, or an error: ErrDenied (wrapped or not) answers 403, a
	// refused connection 503, anything else 502. It runs after the TLS
	// handshake, once per CONNECT; ctx ends with the stream.
	Handle func(ctx context.Context, r *Request) (net.Conn, error)
	// Stream, when set, is asked first and may speak on the tunnel's
	// stream itself (the destination's HTTP proxy): it returns serve, run
	// on the stream once the CONNECT is answered, or nil to fall back to
	// Handle. Its errors answer like Handle's.
	Stream func(ctx context.Context, r *Request) (serve func(stream net.Conn), err error)
	// Log receives denials and connection errors; nil discards them.
	Log *slog.Logger

	initOnce sync.Once
	log      *slog.Logger

	// mu guards the fields below.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*mux]struct{} // served HTTP/2 connections, for Close
	closed    bool
	accepting sync.WaitGroup // Serve loops
}

// handshakeTimeout bounds a TLS handshake, so a silent peer cannot hold a
// goroutine.
const handshakeTimeout = 10 * time.Second

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.log = s.Log
		if s.log == nil {
			s.log = slog.New(slog.DiscardHandler)
		}
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*mux]struct{})
	})
}

// Serve accepts TCP connections on l, does TLS and serves HTTP/2 on each.
// It returns nil once l is closed (by Close or by the caller), or the
// accept error that stopped it.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	if s.TLS == nil || s.Handle == nil {
		return errors.New("hbone: server needs TLS and Handle")
	}
	if !slices.Contains(s.TLS.NextProtos, http2.NextProtoTLS) {
		return errors.New(`hbone: server TLS config must offer ALPN "h2"`)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.accepting.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		s.accepting.Done()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("hbone accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept: %w", err)
		}
		backoff = 0
		go s.serveConn(c)
	}
}

// serveConn does the TLS handshake, then serves HTTP/2 until the
// connection ends.
func (s *Server) serveConn(c net.Conn) {
	tc := tls.Server(c, s.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.log.Debug("hbone tls handshake", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != http2.NextProtoTLS || cs.Version != tls.VersionTLS13 {
		s.log.Debug("hbone refused non-h2/TLS1.3 conn", "remote", c.RemoteAddr(), "alpn", cs.NegotiatedProtocol)
		tc.Close()
		return
	}
	h := &connHandler{s: s, state: cs, local: tc.LocalAddr(), remote: tc.RemoteAddr()}
	mc := newMux(tc, false)
	mc.onStream = h.serveStream
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.conns[mc] = struct{}{}
	}
	s.mu.Unlock()
	if closed {
		tc.Close()
		return
	}
	defer func() {
		s.mu.Lock()
		delete(s.conns, mc)
		s.mu.Unlock()
	}()
	if err := mc.start(); err != nil {
		s.log.Debug("hbone http2 preface", "remote", c.RemoteAddr(), "err", err)
		return
	}
	go mc.keepalive(0, readIdleTimeout, pingTimeout)
	<-mc.done
}

// connHandler serves the CONNECT streams of one HBONE connection.
type connHandler struct {
	s             *Server
	state         tls.ConnectionState
	local, remote net.Addr
}

// serveStream answers one CONNECT and then carries the tunnel, in the
// stream's own goroutine.
func (h *connHandler) serveStream(st *muxStream, authority string, hdr http.Header) {
	st.local, st.remote = h.local, h.remote
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := &Request{Authority: authority, Header: hdr, State: h.state, Local: h.local, Remote: h.remote}
	var serve func(net.Conn)
	var err error
	if h.s.Stream != nil {
		serve, err = h.s.Stream(ctx, req)
	}
	var app net.Conn
	if err == nil && serve == nil {
		app, err = h.s.Handle(ctx, req)
		if err == nil && app == nil {
			err = errors.New("hbone: Handle returned neither a conn nor an error")
		}
	}
	if err != nil {
		h.refuse(st, authority, err)
		return
	}
	if app != nil {
		defer app.Close()
	}
	if st.respond(http.StatusOK) != nil {
		return
	}
	if serve != nil {
		serve(st)
		st.CloseWrite() // the stream's end, after whatever serve wrote
		return
	}
	relay(st, app)
}

// refuse answers a CONNECT that Stream or Handle refused.
func (h *connHandler) refuse(st *muxStream, authority string, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, ErrDenied):
		code = http.StatusForbidden
		h.s.log.Info("hbone denied", "authority", authority, "remote", h.remote, "err", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		code = http.StatusServiceUnavailable
	}
	if code != http.StatusForbidden {
		h.s.log.Debug("hbone upstream", "authority", authority, "code", code, "err", err)
	}
	st.respond(code)
}

// relay moves bytes between the client stream and the application until
// both directions end, passing each side's half-close on: app → client
// runs here, client → app in one goroutine of ours, joined before relay
// returns.
func relay(st *muxStream, app net.Conn) {
	upDone := make(chan struct{})
	go func() { // hbone-up: client → app
		defer close(upDone)
		if err := copyBuf(app, st); err != nil {
			app.Close() // client reset: unblock the other direction
			return
		}
		if cw, ok := app.(closeWriter); ok {
			cw.CloseWrite() // client half-closed: pass the FIN on
		}
	}()
	if err := copyBuf(st, app); err != nil { // hbone-down: app → client
		st.Close() // app reset or client gone: reset the stream
		app.Close()
	} else {
		st.CloseWrite() // app half-closed: END_STREAM, keep reading
	}
	<-upDone
}

// Close stops accepting on every listener given to Serve and asks each
// HTTP/2 connection to finish (GOAWAY): existing tunnels run to their end,
// then their connections close. It waits for the Serve loops to return,
// not for the tunnels. Idempotent.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*mux, 0, len(s.conns))
	for mc := range s.conns {
		conns = append(conns, mc)
	}
	s.mu.Unlock()
	s.accepting.Wait()
	for _, mc := range conns {
		mc.drain(true)
	}
	return nil
}
