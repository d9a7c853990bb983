package hbone

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
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

// bufSize is the relay buffer size: large enough for bulk transfers (a
// write of this much goes out as one or two DATA frames under one flush),
// small enough to keep per-tunnel memory bounded.
const bufSize = 64 << 10

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
