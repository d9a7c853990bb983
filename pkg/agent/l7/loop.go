package l7

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// serveLoop serves HTTP/1.x on an application's connection with a loop
// of its own: read a request, run h in this goroutine, write the answer,
// next. net/http's Server starts a background read for every request
// (to notice a client that leaves) and waits for it to stop before the
// next request: two goroutine hand-offs per request, a large share of
// what the L7 path cost over the L4 one on a busy node. The price: a
// client that leaves mid-request is noticed when its answer is written,
// not before (the request's timeout still bounds it). h2c connections go
// to net/http's Server. It closes c when done.
func serveLoop(c net.Conn, h http.Handler, idle time.Duration, log *slog.Logger) {
	defer c.Close()
	defer func() {
		if r := recover(); r != nil && r != http.ErrAbortHandler { // an abort only ends the connection
			logOr(log).Error("l7: panic serving a connection; closing it", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	hc, h2c := newHTTPConn(c, idle)
	defer hc.release()
	if h2c {
		serveOne(&bufferedConn{Conn: c, r: hc.br}, h, idle)
		return
	}
	br, bw := hc.br, hc.bw
	for {
		req, ok := hc.readRequest(idle)
		if !ok {
			return
		}
		req.RemoteAddr = c.RemoteAddr().String()
		body := req.Body
		var cont *continueBody
		if expectsContinue(req) {
			cont = &continueBody{ReadCloser: body, bw: bw}
			req.Body = cont
		}
		w := &loopWriter{c: c, br: br, bw: bw, req: req, cont: cont, h: http.Header{}, length: -1}
		hc.pooled = false // until the handler returns: a panic (an abort) must not pool buffers in use
		h.ServeHTTP(w, req)
		hc.pooled = true
		// Past this point a transport may still hold the request body
		// (it reads from br): the buffers are pooled again only if the
		// connection goes on, which needs that body read to its end.
		if w.hijacked || w.finish() != nil || req.Close || w.closeAfter || drain(body) > maxDrain {
			hc.pooled = false
			return
		}
	}
}

// loopWriter is the http.ResponseWriter of serveLoop: HTTP/1.1 with a
// Content-Length when the handler set one, chunked otherwise (HTTP/1.0:
// close-delimited), trailers, Flush and Hijack (upgrades).
type loopWriter struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	req  *http.Request
	cont *continueBody // the request's 100-continue, if it asked for one
	h    http.Header

	wroteHeader bool
	noBody      bool
	chunked     bool
	cw          io.WriteCloser
	length      int64 // declared Content-Length, -1 for none
	written     int64
	closeAfter  bool
	hijacked    bool
	err         error // the first write error: the connection is gone
}

func (w *loopWriter) Header() http.Header { return w.h }

func (w *loopWriter) WriteHeader(code int) {
	if w.wroteHeader || w.hijacked {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational answers (103 Early Hints) go out at once; 100
		// Continue is ours to send when the body is read (continueBody).
		if code != http.StatusContinue {
			writeHead(w.bw, code, w.h)
			w.setErr(w.bw.Flush())
		}
		return
	}
	w.wroteHeader = true
	if !w.cont.answer() {
		w.closeAfter = true // the client was never told to send its body
	}
	h := w.h
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if !w.req.ProtoAtLeast(1, 1) {
		w.closeAfter = true // HTTP/1.0: one request per connection
	}
	switch {
	case code == http.StatusSwitchingProtocols:
	case h.Get("Content-Length") != "":
		n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		if err != nil || n < 0 {
			h.Del("Content-Length")
			w.closeAfter = true
		} else {
			w.length = n
		}
	case w.noBody:
	case !w.closeAfter:
		w.chunked = true
		h.Del("Transfer-Encoding")
		h.Set("Transfer-Encoding", "chunked")
		w.cw = httputil.NewChunkedWriter(w.bw)
	}
	if w.closeAfter || w.req.Close {
		h.Set("Connection", "close")
	}
	var trailers http.Header
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if trailers == nil {
				trailers = http.Header{}
			}
			trailers[k] = h[k]
			delete(h, k)
		}
	}
	writeHead(w.bw, code, h)
	for k, v := range trailers {
		h[k] = v
	}
}

func (w *loopWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody || w.hijacked {
		return len(p), nil
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	var n int
	var err error
	if w.chunked {
		n, err = w.cw.Write(p)
	} else {
		n, err = w.bw.Write(p)
	}
	w.written += int64(n)
	w.setErr(err)
	return n, err
}

// Flush sends what is buffered: ReverseProxy flushes streamed bodies.
func (w *loopWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.setErr(w.bw.Flush())
}

// Hijack hands the connection to the handler (an upgrade).
func (w *loopWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if err := w.bw.Flush(); err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	// The pools must not get these back: the handler keeps them.
	br, bw := w.br, bufio.NewWriter(w.c)
	return &bufferedConn{Conn: w.c, r: br}, bufio.NewReadWriter(br, bw), nil
}

// finish ends the answer: a header if none was written, the last chunk
// and the trailers, a flush.
func (w *loopWriter) finish() error {
	if !w.wroteHeader {
		if w.h.Get("Content-Length") == "" && w.req.Method != http.MethodHead {
			w.h.Set("Content-Length", "0")
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.chunked {
		w.cw.Close() // "0\r\n"
		var trailer http.Header
		for k, vv := range w.h {
			name, ok := strings.CutPrefix(k, http.TrailerPrefix)
			if !ok && !declaredTrailer(w.h, k) {
				continue
			}
			if trailer == nil {
				trailer = http.Header{}
			}
			trailer[name] = vv
		}
		trailer.Write(w.bw) // sanitises values as a header does
		w.bw.WriteString("\r\n")
	}
	if w.length >= 0 && w.written < w.length && !w.noBody {
		w.closeAfter = true // a short body: the client would wait for the rest
	}
	w.setErr(w.bw.Flush())
	return w.err
}

// declaredTrailer tells whether k was announced in h's Trailer header.
func declaredTrailer(h http.Header, k string) bool {
	for _, v := range h["Trailer"] {
		for _, f := range strings.Split(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

func (w *loopWriter) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

// logOr is log, or a logger that drops everything when there is none.
func logOr(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
