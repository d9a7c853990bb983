package l4

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Each direction copies through a small buffer and switches to a large one
// while the stream is bulk (a read fills the small buffer), then back once
// reads fit the small one again. Bulk streams get few, large syscalls (a
// 1 MiB buffer moves 0.86-0.96x the direct rate, 64 KiB only 0.6x, see
// docs/benchmarks.md), and the many idle or chatty connections of a node
// hold only the small buffer. The buffer also bounds what the relay holds
// unread for a connection, besides the kernel's socket buffers.
const (
	smallBufSize = 32 << 10
	bigBufSize   = 1 << 20
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }}
	bigBufs   = sync.Pool{New: func() any { b := make([]byte, bigBufSize); return &b }}
)

// copyBuf is one direction's buffer, small or big.
type copyBuf struct{ p *[]byte }

func newCopyBuf() *copyBuf { return &copyBuf{p: smallBufs.Get().(*[]byte)} }

func (c *copyBuf) bytes() []byte { return *c.p }

// adapt picks the buffer for the next read from the size of the last one.
func (c *copyBuf) adapt(lastRead int) {
	switch n := len(*c.p); {
	case n == smallBufSize && lastRead == n:
		smallBufs.Put(c.p)
		c.p = bigBufs.Get().(*[]byte)
	case n == bigBufSize && lastRead < smallBufSize:
		bigBufs.Put(c.p)
		c.p = smallBufs.Get().(*[]byte)
	}
}

func (c *copyBuf) release() {
	if len(*c.p) == bigBufSize {
		bigBufs.Put(c.p)
	} else {
		smallBufs.Put(c.p)
	}
	c.p = nil
}

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

// Counts are the bytes one Pipe has copied in each direction so far. They
// may be read while the Pipe runs (a periodic metrics flush) and are final
// once it returns.
type Counts struct {
	AToB atomic.Int64
	_    [56]byte // the two copy goroutines each write their own cache line
	BToA atomic.Int64
}

// Pipe copies both directions between a and b until both are done. When one
// side's reads end (EOF), the other side is half-closed (CloseWrite), so the
// peer sees EOF and can still answer; a side that cannot half-close is
// closed instead. An error in either direction closes both at once. Pipe
// closes a and b before it returns. It returns the bytes copied a->b and
// b->a and the first error other than EOF.
func Pipe(a, b net.Conn) (aToB, bToA int64, err error) {
	var n Counts
	err = PipeCounts(a, b, &n)
	return n.AToB.Load(), n.BToA.Load(), err
}

// PipeCounts is Pipe keeping its byte counts in n as it goes: the copy
// loop adds each write's count (one atomic add per chunk of up to 1 MiB,
// which it counted anyway), so readers see progress while the connection
// lasts.
func PipeCounts(a, b net.Conn, n *Counts) error {
	return PipeShortcut(a, b, n, nil)
}

// Shortcut moves one direction of a piped connection out of the relay
// (into the kernel: pkg/datapath) once the relay has written every byte
// sent that way so far; aToB names the direction, relayed is what the
// relay wrote that way. on says the direction no longer passes the relay;
// again whether a later try can succeed.
type Shortcut interface {
	Flip(aToB bool, relayed int64) (on, again bool, err error)
}

// maxFlipTries bounds the tries per direction: one before the first read
// and one after each write. A direction whose sender never pauses between
// messages may never be caught up; it stays relayed.
const maxFlipTries = 1024

// flipper tries a direction's Shortcut until it is on or no use.
type flipper struct {
	sc    Shortcut
	aToB  bool
	tries int
	done  bool
}

func (f *flipper) try(relayed int64) {
	if f == nil || f.done {
		return
	}
	f.tries++
	on, again, err := f.sc.Flip(f.aToB, relayed)
	f.done = on || !again || err != nil || f.tries >= maxFlipTries
}

// PipeShortcut is PipeCounts with a shortcut: each direction is offered
// to sc before its first read and after each write, until it is taken.
// A taken direction's copy goes on reading its source, which then only
// ends (EOF, half-closing the other side as before) or, if the shortcut
// falls back (its target socket gone), carries the rest in order. n
// counts only what the relay copied; sc knows the rest.
func PipeShortcut(a, b net.Conn, n *Counts, sc Shortcut) error {
	p := &pipe{a: a, b: b}
	var fa, fb *flipper
	if sc != nil {
		fa, fb = &flipper{sc: sc, aToB: true}, &flipper{sc: sc}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.copyAToB(&n.AToB, fa)
	}()
	p.copyBToA(&n.BToA, fb)
	wg.Wait()
	a.Close()
	b.Close()
	return p.err
}

// copyAToB and copyBToA are separate named functions so that goroutine
// dumps of a busy proxy say which way each copy runs.
func (p *pipe) copyAToB(n *atomic.Int64, f *flipper) { p.copyDir(p.b, p.a, n, f, "a->b") }

func (p *pipe) copyBToA(n *atomic.Int64, f *flipper) { p.copyDir(p.a, p.b, n, f, "b->a") }

// copyDir copies src to dst until src ends, then half-closes dst.
func (p *pipe) copyDir(dst, src net.Conn, n *atomic.Int64, f *flipper, dir string) {
	buf := newCopyBuf()
	defer buf.release()
	if err := copyLoop(writerOnly{dst}, readerOnly{src}, buf, n, f); err != nil {
		p.abort(fmt.Errorf("%s: %w", dir, err))
		return
	}
	cw, ok := dst.(closeWriter)
	if !ok {
		p.abort(nil)
		return
	}
	if err := cw.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
		p.abort(fmt.Errorf("%s: close write: %w", dir, err))
	}
}

// copyLoop copies src to dst through buf until src returns io.EOF (a nil
// error) or either side fails, adding what it wrote to n and offering the
// direction to f (nil: none) when all it read is written. It is the only
// copy in this package and sees nothing but Read and Write.
func copyLoop(dst io.Writer, src io.Reader, buf *copyBuf, n *atomic.Int64, f *flipper) error {
	f.try(n.Load())
	for {
		b := buf.bytes()
		nr, rerr := src.Read(b)
		if nr > 0 {
			nw, werr := dst.Write(b[:nr])
			n.Add(int64(nw))
			if werr != nil {
				return fmt.Errorf("write: %w", werr)
			}
			if nw != nr {
				return fmt.Errorf("write: %w", io.ErrShortWrite)
			}
			buf.adapt(nr)
			f.try(n.Load())
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("read: %w", rerr)
		}
	}
}
