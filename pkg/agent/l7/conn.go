package l7

import (
	"github.com/hms-node/hms-node/pkg/agent/l4"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Timeouts of the HTTP servers on the proxy's connections. A client's
// keep-alive connection may idle longer than the proxy's pools keep
// theirs, so the calling side always closes a pooled stream first.
const (
	readHeaderTimeout = 30 * time.Second
	clientIdleTimeout = 10 * time.Minute
	tunnelIdleTimeout = 2 * time.Minute
)

// serveOne serves HTTP/1.1 and h2c (prior knowledge) on one connection
// that is already accepted, and returns when it is closed.
func serveOne(c net.Conn, h http.Handler, idle time.Duration) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idle,
		ErrorLog:          log.New(io.Discard, "", 0),
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	oc := &oneConn{Conn: c, closed: make(chan struct{})}
	srv.Serve(&oneListener{c: oc})
}

// oneConn tells its listener when the server is done with it.
type oneConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *oneConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// CloseWrite keeps half-close working for upgraded connections.
func (c *oneConn) CloseWrite() error {
	return l4.CloseWrite(c.Conn)
}

// oneListener hands out one connection, then blocks until that
// connection is closed, so Serve returns exactly when the connection ends.
type oneListener struct {
	c    *oneConn
	mu   sync.Mutex
	used bool
}

func (l *oneListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	used := l.used
	l.used = true
	l.mu.Unlock()
	if !used {
		return l.c, nil
	}
	<-l.c.closed
	return nil, net.ErrClosed
}

func (l *oneListener) Close() error   { return nil }
func (l *oneListener) Addr() net.Addr { return l.c.LocalAddr() }

// statusWriter records what was answered; Unwrap keeps Flush and Hijack
// (upgrades) reachable through http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 || w.status == http.StatusContinue || w.status == http.StatusEarlyHints {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts the request body bytes the proxy forwarded.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// LooksLikeHTTP tells whether a connection's first bytes start an
// HTTP/1.x request line or the h2c preface, for protocol: auto. b is
// whatever the client sent first; at least 3 bytes must agree with a
// method (a request line arrives in one segment in practice).
func LooksLikeHTTP(b []byte) bool {
	for _, m := range httpStarts {
		k := min(len(b), len(m))
		if k >= 3 && string(b[:k]) == m[:k] {
			return true
		}
	}
	return false
}

var httpStarts = []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "TRACE ", "PRI * HTTP/2.0"}
