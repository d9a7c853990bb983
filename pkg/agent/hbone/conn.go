package hbone

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// ErrDenied is the error of a tunnel the destination refused (HTTP 403). A
// Server's Handle returns it (possibly wrapped) to refuse a caller.
var ErrDenied = errors.New("hbone: denied")

// StatusError is the error Connect returns when the server answers the
// CONNECT with a status other than 200. A 403 unwraps to [ErrDenied].
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hbone: connect refused: %d %s", e.Code, http.StatusText(e.Code))
}

// Unwrap makes errors.Is(err, ErrDenied) true for a 403.
func (e *StatusError) Unwrap() error {
	if e.Code == http.StatusForbidden {
		return ErrDenied
	}
	return nil
}

// bufSize is the relay buffer size: large enough for bulk transfers (two
// 16 KiB DATA frames), small enough to keep per-tunnel memory bounded.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// copyBuf copies src to dst through a pooled buffer until src ends. It
// returns nil on EOF. Plain Read/Write on purpose: io.Copy would pick
// splice(2) between TCP conns, which moves nothing on redirected sockets.
func copyBuf(dst io.Writer, src io.Reader) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// closeWriter is a conn that can half-close, like *net.TCPConn.
type closeWriter interface{ CloseWrite() error }

// tunnel is the client end of one CONNECT stream. Writes go into the
// request body pipe, which x/net's per-stream goroutine drains into DATA
// frames (flushed each frame); reads come from the response body.
type tunnel struct {
	pw      *io.PipeWriter
	body    io.ReadCloser
	local   net.Addr
	remote  net.Addr
	once    sync.Once
	release func() // gives the stream slot back to the pool and cancels the stream context
}

func (t *tunnel) Read(p []byte) (int, error) { return t.body.Read(p) }

// Write returns once x/net's stream goroutine has taken all of p; it
// blocks while HTTP/2 flow control holds the stream back. After
// CloseWrite, Close or a reset by the peer it fails with io.ErrClosedPipe.
func (t *tunnel) Write(p []byte) (int, error) { return t.pw.Write(p) }

// CloseWrite ends the request body: the server reads EOF (END_STREAM) and
// may keep sending.
func (t *tunnel) CloseWrite() error { return t.pw.Close() }

// Close resets the stream unless both directions already ended, and
// returns the stream slot to the pool. Idempotent.
func (t *tunnel) Close() error {
	t.once.Do(func() {
		t.pw.CloseWithError(net.ErrClosed)
		t.body.Close()
		t.release()
	})
	return nil
}

// LocalAddr is the local address of the HBONE (TCP) connection.
func (t *tunnel) LocalAddr() net.Addr { return t.local }

// RemoteAddr is the tunnel's far end: the CONNECT authority when it parses
// as ip:port, else the address of the HBONE connection's peer.
func (t *tunnel) RemoteAddr() net.Addr { return t.remote }

// SetDeadline is a no-op; see the package documentation.
func (t *tunnel) SetDeadline(time.Time) error { return nil }

// SetReadDeadline is a no-op; see the package documentation.
func (t *tunnel) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline is a no-op; see the package documentation.
func (t *tunnel) SetWriteDeadline(time.Time) error { return nil }

// stream is the server end of one CONNECT stream as a net.Conn: the request
// body is the read side, the response writer (flushed each write) the
// write side.
type stream struct {
	body          io.ReadCloser
	w             http.ResponseWriter
	flush         func() error
	local, remote net.Addr
}

func (s *stream) Read(p []byte) (int, error) { return s.body.Read(p) }

func (s *stream) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		return n, err
	}
	return n, s.flush()
}

// CloseWrite is a no-op: the response ends when the handler returns, which
// the relay does right after the app→client copy ends.
func (s *stream) CloseWrite() error { return nil }

// Close unblocks a pending Read; the stream itself ends with the handler.
func (s *stream) Close() error { return s.body.Close() }

func (s *stream) LocalAddr() net.Addr              { return s.local }
func (s *stream) RemoteAddr() net.Addr             { return s.remote }
func (s *stream) SetDeadline(time.Time) error      { return nil }
func (s *stream) SetReadDeadline(time.Time) error  { return nil }
func (s *stream) SetWriteDeadline(time.Time) error { return nil }

var (
	_ net.Conn    = (*tunnel)(nil)
	_ closeWriter = (*tunnel)(nil)
	_ net.Conn    = (*stream)(nil)
)
