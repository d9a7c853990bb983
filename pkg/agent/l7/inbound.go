package l7

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/hms-node/hms-node/pkg/agent/l4"
)

// The called side serves its tunnels with a request loop of its own
// rather than net/http's Server: only the calling agent speaks on a
// tunnel, one request at a time, so the loop reads a request, hands it
// to the application and writes the answer, all in the tunnel's
// goroutine. net/http's Server starts a background read per request and
// waits for it to stop before the next one, two goroutine hand-offs per
// request that cost more than the rest of the work on a busy node. An
// h2c tunnel (gRPC, HTTP/2 clients) still goes to net/http's Server.

// h2Preface starts every h2c (prior knowledge) connection.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxDrain bounds how much of a request body the application left unread
// is read away to keep the tunnel for the next request.
const maxDrain = 256 << 10

var (
	tunnelReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	tunnelWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// ServeConn serves the HTTP requests a caller's agent sends over one
// tunnel to dst's port, until the tunnel closes or idles for
// tunnelIdleTimeout, and closes it.
func (s *Server) ServeConn(c net.Conn, dst *Local, caller Caller, port uint16) {
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			logOr(s.Log).Error("l7: panic serving a tunnel; closing it", "destination", dst.key(), "panic", r, "stack", string(debug.Stack()))
		}
	}()
	hc, h2c := newHTTPConn(c, tunnelIdleTimeout)
	defer hc.release()
	if h2c {
		serveOne(&bufferedConn{Conn: c, r: hc.br}, s.h2Proxy(dst, caller, port), tunnelIdleTimeout)
		return
	}
	for {
		req, ok := hc.readRequest(tunnelIdleTimeout)
		if !ok {
			return
		}
		hc.pooled = false // while the request is served: a panic must not pool buffers in use
		if !s.serveRequest(c, hc.br, hc.bw, req, dst, caller, port) {
			return // the request body may still be read from br: the buffers stay unpooled
		}
		hc.pooled = true
	}
}

// h2Proxy is the ReverseProxy of an h2c tunnel.
func (s *Server) h2Proxy(dst *Local, caller Caller, port uint16) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Host = pr.In.Host
		},
		Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
			return s.RoundTrip(req, dst, caller, port)
		}),
		ErrorLog:   discardLog,
		BufferPool: &proxyBuffers,
	}
}

// serveRequest forwards one request and writes its answer; it reports
// whether the tunnel can carry the next one.
func (s *Server) serveRequest(c net.Conn, br *bufio.Reader, bw *bufio.Writer, req *http.Request, dst *Local, caller Caller, port uint16) bool {
	body := req.Body
	var cont *continueBody
	if expectsContinue(req) {
		// The caller waits for our 100 before it sends the body; it is
		// sent when the application's side first reads the body, as
		// net/http's Server does.
		cont = &continueBody{ReadCloser: body, bw: bw}
		req.Body = cont
	}
	upgrade := upgradeType(req.Header)
	removeHopByHop(req.Header)
	if upgrade != "" {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", upgrade)
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header.Set("User-Agent", "") // no Go default towards the application
	}
	req.RequestURI = ""
	resp, err := s.RoundTrip(req, dst, caller, port)
	if err != nil {
		cont.answer()
		msg := "hms-node: the application did not answer: " + err.Error() + "\n"
		writeHead(bw, http.StatusBadGateway, http.Header{"Content-Type": {"text/plain; charset=utf-8"},
			"Content-Length": {strconv.Itoa(len(msg))}, "Connection": {"close"}})
		bw.WriteString(msg)
		bw.Flush()
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		s.relayUpgrade(c, br, bw, resp)
		return false
	}
	keep := cont.answer() && !req.Close && !resp.Close
	if err := writeResponse(bw, req, resp, keep); err != nil || !keep {
		return false
	}
	// The next request starts after this one's body: read away what the
	// application left, if it is little.
	if drain(body) > maxDrain {
		return false
	}
	return keep
}

// drain reads away up to maxDrain+1 bytes of a request body the handler
// left unread and says how many it read; a bodiless request costs nothing.
func drain(body io.Reader) int64 {
	if body == nil || body == http.NoBody {
		return 0
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(body, maxDrain+1))
	return n
}

// writeResponse writes resp as HTTP/1.1: a sized body in one flush, a
// body of unknown length chunked and flushed as it arrives (streams),
// with the application's trailers.
func writeResponse(bw *bufio.Writer, req *http.Request, resp *http.Response, keep bool) error {
	h := resp.Header
	removeHopByHop(h)
	if !keep {
		h.Set("Connection", "close")
	}
	noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent ||
		resp.StatusCode == http.StatusNotModified || resp.StatusCode < 200
	chunked := !noBody && resp.ContentLength < 0
	switch {
	case chunked:
		h.Del("Content-Length")
		h.Set("Transfer-Encoding", "chunked")
		if len(resp.Trailer) > 0 {
			names := make([]string, 0, len(resp.Trailer))
			for k := range resp.Trailer {
				names = append(names, k)
			}
			h.Set("Trailer", strings.Join(names, ", "))
		}
	case resp.ContentLength >= 0 && resp.StatusCode >= 200 && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified:
		h.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	writeHead(bw, resp.StatusCode, h)
	if noBody {
		return bw.Flush()
	}
	if !chunked {
		buf := proxyBuffers.Get()
		defer proxyBuffers.Put(buf)
		if _, err := io.CopyBuffer(bw, readerOnly{resp.Body}, buf); err != nil {
			return err
		}
		return bw.Flush()
	}
	if err := bw.Flush(); err != nil { // the head goes out at once: a stream's first event may be far off
		return err
	}
	cw := httputil.NewChunkedWriter(bw)
	buf := proxyBuffers.Get()
	defer proxyBuffers.Put(buf)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := cw.Write(buf[:n]); err != nil {
				return err
			}
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	cw.Close() // "0\r\n"
	resp.Trailer.Write(bw)
	bw.WriteString("\r\n")
	return bw.Flush()
}

// relayUpgrade answers 101 and relays bytes between the tunnel and the
// application's upgraded connection until either ends.
func (s *Server) relayUpgrade(c net.Conn, br *bufio.Reader, bw *bufio.Writer, resp *http.Response) {
	app, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		return
	}
	defer app.Close()
	upgrade := upgradeType(resp.Header)
	removeHopByHop(resp.Header)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", upgrade)
	writeHead(bw, http.StatusSwitchingProtocols, resp.Header)
	if bw.Flush() != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(writerOnly{c}, readerOnly{app})
		l4.CloseWrite(c)
	}()
	io.Copy(writerOnly{app}, readerOnly{br}) // what the caller sent after the request, then the tunnel
	// An upgraded response body cannot half-close: closing it ends both
	// directions, as ReverseProxy's upgrade does.
	app.Close()
	<-done
}

// upgradeType is the protocol a request or response upgrades to, or "".
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// hopHeaders are the hop-by-hop headers of RFC 9110 §7.6.1 and their
// older kin, which a proxy never forwards.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// removeHopByHop deletes the hop-by-hop headers of h and those its
// Connection header names; "Te: trailers" is kept (gRPC needs it).
func removeHopByHop(h http.Header) {
	trailers := httpguts.HeaderValuesContainsToken(h["Te"], "trailers")
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k) // canonical already
	}
	if trailers {
		h.Set("Te", "trailers")
	}
}

// continueBody sends the caller's awaited 100 Continue on the first read,
// unless the final answer has begun: the body may be read from another
// goroutine (the transport's) than the one writing the answer.
type continueBody struct {
	io.ReadCloser
	bw       *bufio.Writer
	mu       sync.Mutex
	sent     bool // the 100 went out: the body follows
	answered bool // the final answer began: no 100 any more
}

func (b *continueBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.sent && !b.answered {
		b.sent = true
		b.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := b.bw.Flush(); err != nil {
			b.mu.Unlock()
			return 0, err
		}
	}
	b.mu.Unlock()
	return b.ReadCloser.Read(p)
}

// answer is called as the final answer begins; it reports whether the
// connection can carry another request: not when the client was never
// told to send its body (it may send it now, or never). Nil: no Expect.
func (b *continueBody) answer() bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.answered = true
	return b.sent
}

// expectsContinue tells whether req waits for a 100 Continue.
func expectsContinue(req *http.Request) bool {
	return req.ProtoAtLeast(1, 1) && req.ContentLength != 0 && strings.EqualFold(req.Header.Get("Expect"), "100-continue")
}

// maxHeaderBytes bounds a request's head, as net/http's Server does
// (DefaultMaxHeaderBytes plus its slack); a longer one is answered 431.
const maxHeaderBytes = http.DefaultMaxHeaderBytes + 4096

var errHeaderTooLarge = errors.New("request header too large")

// headLimit is the reader under a connection's bufio.Reader: while a
// request head is read, at most maxHeaderBytes come from the connection.
type headLimit struct {
	r io.Reader
	n int64 // bytes left for this head; < 0: no limit (a body)
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if l.n > 0 && int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	if l.n > 0 {
		l.n -= int64(n)
	}
	return n, err
}

// httpConn is a connection a request loop serves: its pooled buffers,
// with the head limit under the reader.
type httpConn struct {
	c   net.Conn
	lim *headLimit
	br  *bufio.Reader
	bw  *bufio.Writer // nil on an h2c connection
	// pooled: release gives the buffers back. Cleared when another
	// goroutine may still read br (a request body a transport holds, an
	// upgrade's copy, an h2c server).
	pooled bool
}

// newHTTPConn takes pooled buffers for c and peeks at its first bytes;
// h2c reports a connection that opens with the HTTP/2 preface, which is
// net/http's to serve.
func newHTTPConn(c net.Conn, idle time.Duration) (hc *httpConn, h2c bool) {
	hc = &httpConn{c: c, lim: &headLimit{r: c, n: -1}, pooled: true}
	hc.br = tunnelReaders.Get().(*bufio.Reader)
	hc.br.Reset(hc.lim)
	c.SetReadDeadline(time.Now().Add(idle))
	if p, err := hc.br.Peek(3); err == nil && string(p) == h2Preface[:3] {
		c.SetReadDeadline(time.Time{})
		hc.pooled = false
		return hc, true
	}
	hc.bw = tunnelWriters.Get().(*bufio.Writer)
	hc.bw.Reset(c)
	return hc, false
}

// release gives the buffers back to their pools when nothing else may
// still use them.
func (hc *httpConn) release() {
	if !hc.pooled {
		return
	}
	hc.br.Reset(nil)
	tunnelReaders.Put(hc.br)
	hc.bw.Reset(nil)
	tunnelWriters.Put(hc.bw)
}

// readRequest reads the next request head under the size limit and the
// idle deadline; on failure it answers what net/http's Server would (400
// or 431) unless the connection simply ended or idled.
func (hc *httpConn) readRequest(idle time.Duration) (*http.Request, bool) {
	c, bw := hc.c, hc.bw
	c.SetReadDeadline(time.Now().Add(idle))
	hc.lim.n = maxHeaderBytes
	req, err := http.ReadRequest(hc.br)
	hc.lim.n = -1
	if err != nil {
		code := http.StatusBadRequest
		switch {
		case errors.Is(err, errHeaderTooLarge):
			code = http.StatusRequestHeaderFieldsTooLarge
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
			return nil, false
		}
		writeHead(bw, code, http.Header{"Content-Length": {"0"}, "Connection": {"close"}})
		bw.Flush()
		return nil, false
	}
	c.SetReadDeadline(time.Time{})
	return req, true
}

// bufferedConn is a conn whose first bytes were read into r already.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite keeps half-close working for upgraded connections.
func (c *bufferedConn) CloseWrite() error {
	return l4.CloseWrite(c.Conn)
}

// readerOnly and writerOnly hide ReadFrom and WriteTo: io.Copy between
// TCP conns would splice(2), which moves nothing on redirected sockets.
type (
	readerOnly struct{ io.Reader }
	writerOnly struct{ io.Writer }
)
