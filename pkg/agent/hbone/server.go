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
	h1       *http.Server // only carries x/net's graceful-shutdown hook
	h2       *http2.Server
	log      *slog.Logger

	// mu guards the fields below.
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
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
		s.h1 = &http.Server{}
		s.h2 = &http2.Server{MaxConcurrentStreams: 1000}
		// ConfigureServer links h1.Shutdown to x/net's graceful GOAWAY on
		// every connection served by s.h2; h1 serves nothing itself.
		if err := http2.ConfigureServer(s.h1, s.h2); err != nil {
			panic(err) // only fails for TLS 1.2 cipher lists, and h1 has none
		}
		s.listeners = make(map[net.Listener]struct{})
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
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		tc.Close()
		return
	}
	h := &connHandler{s: s, state: cs, local: tc.LocalAddr(), remote: tc.RemoteAddr()}
	s.h2.ServeConn(tc, &http2.ServeConnOpts{BaseConfig: s.h1, Handler: h})
}

// connHandler serves the CONNECT streams of one HBONE connection.
type connHandler struct {
	s             *Server
	state         tls.ConnectionState
	local, remote net.Addr
}

func (h *connHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()["Date"] = nil // x/net adds none when the key is present
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	req := &Request{Authority: r.Host, Header: r.Header, State: h.state, Local: h.local, Remote: h.remote}
	var serve func(net.Conn)
	var err error
	if h.s.Stream != nil {
		serve, err = h.s.Stream(r.Context(), req)
	}
	var app net.Conn
	if err == nil && serve == nil {
		app, err = h.s.Handle(r.Context(), req)
		if err == nil && app == nil {
			err = errors.New("hbone: Handle returned neither a conn nor an error")
		}
	}
	if err != nil {
		h.refuse(w, r, err)
		return
	}
	if app != nil {
		defer app.Close()
	}
	flusher, ok := w.(interface{ FlushError() error })
	if !ok {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	if err := flusher.FlushError(); err != nil {
		return
	}
	st := &stream{body: r.Body, w: w, flush: flusher.FlushError, local: h.local, remote: h.remote}
	if serve != nil {
		serve(st)
		return
	}
	relay(st, app)
}

// refuse answers a CONNECT that Stream or Handle refused.
func (h *connHandler) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	switch {
	case errors.Is(err, ErrDenied):
		code = http.StatusForbidden
		h.s.log.Info("hbone denied", "authority", r.Host, "remote", h.remote, "err", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		code = http.StatusServiceUnavailable
	}
	if code != http.StatusForbidden {
		h.s.log.Debug("hbone upstream", "authority", r.Host, "code", code, "err", err)
	}
	w.WriteHeader(code)
}

// relay moves bytes between the client stream and the application until
// both directions end. app → client runs here, in x/net's handler
// goroutine; client → app runs in one goroutine of ours, joined before
// relay returns.
func relay(st *stream, app net.Conn) {
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
	copyBuf(st, app) // hbone-down: app → client
	// The response ends when we return, and x/net then resets the request
	// side, so client → app is over too: unblock it and join.
	app.Close()
	st.Close()
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
	s.mu.Unlock()
	s.accepting.Wait()
	// h1 tracks no connections, so Shutdown returns at once after running
	// the GOAWAY hook.
	return s.h1.Shutdown(context.Background())
}
