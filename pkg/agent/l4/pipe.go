package l4

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// bufSize is the copy buffer per direction. It also bounds what the relay
// holds unread for a connection (besides the kernel's socket buffers).
const bufSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// readerOnly and writerOnly hide every method but Read or Write, so that no
// copy can reach (*net.TCPConn).ReadFrom or WriteTo, which use splice(2):
// on a socket redirected by BPF sk_msg splice moves nothing and reports no
// error.
type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

// closeWriter is a connection that can half-close: *net.TCPConn,
// *net.UnixConn, *tls.Conn.
type closeWriter interface{ CloseWrite() error }

// CloseWrite half-closes c when it can (for wrappers that must keep
// half-close working); a connection that cannot is left as it is.
func CloseWrite(c net.Conn) error {
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// pipe is the state both directions of one Pipe share.
type pipe struct {
	a, b      net.Conn
	abortOnce sync.Once
	err       error // first real error; written inside abortOnce
}

// abort records err (the first one wins) and closes both connections, which
// unblocks the other direction; its errors after that are consequences and
// are dropped.
func (p *pipe) abort(err error) {
	p.abortOnce.Do(func() {
		p.err = err
		p.a.Close()
		p.b.Close()
	})
}

// Pipe copies both directions between a and b until both are done. When one
// side's reads end (EOF), the other side is half-closed (CloseWrite), so the
// peer sees EOF and can still answer; a side that cannot half-close is
// closed instead. An error in either direction closes both at once. Pipe
// closes a and b before it returns. It returns the bytes copied a->b and
// b->a and the first error other than EOF.
func Pipe(a, b net.Conn) (aToB, bToA int64, err error) {
	p := &pipe{a: a, b: b}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		aToB = p.copyAToB()
	}()
	bToA = p.copyBToA()
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, p.err
}

// copyAToB and copyBToA are separate named functions so that goroutine
// dumps of a busy proxy say which way each copy runs.
func (p *pipe) copyAToB() int64 { return p.copyDir(p.b, p.a, "a->b") }

func (p *pipe) copyBToA() int64 { return p.copyDir(p.a, p.b, "b->a") }

// copyDir copies src to dst until src ends, then half-closes dst.
func (p *pipe) copyDir(dst, src net.Conn, dir string) int64 {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := copyLoop(writerOnly{dst}, readerOnly{src}, *bp)
	if err != nil {
		p.abort(fmt.Errorf("%s: %w", dir, err))
		return n
	}
	cw, ok := dst.(closeWriter)
	if !ok {
		p.abort(nil)
		return n
	}
	if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		p.abort(fmt.Errorf("%s: close write: %w", dir, err))
	}
	return n
}

// copyLoop copies src to dst with buf until src returns io.EOF (a nil
// error) or either side fails. It is the only copy in this package and sees
// nothing but Read and Write.
func copyLoop(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, fmt.Errorf("write: %w", werr)
			}
			if nw != nr {
				return n, fmt.Errorf("write: %w", io.ErrShortWrite)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("read: %w", rerr)
		}
	}
}
