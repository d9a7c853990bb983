package l7

import (
	"github.com/hms-node/hms-node/pkg/agent/l4"
	"net"
	"os"
	"sync"
	"time"
)

// deadlineConn gives SetReadDeadline to a connection that has none (an
// HBONE stream). net/http's server needs it: it interrupts its background
// read with a deadline in the past before a hijack (upgrades) and uses it
// for idle timeouts; without it a hijack waits forever. One goroutine
// reads ahead into two rotating buffers; Read waits for a chunk, the
// deadline, or a deadline change.
type deadlineConn struct {
	net.Conn
	chunks chan chunk
	free   chan []byte
	cur    []byte // unread part of buf
	buf    []byte // the buffer cur is in, returned to free when used up
	err    error  // the reader's error, after its data

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed when the deadline changes
}

type chunk struct {
	b   []byte
	err error
}

const deadlineBuf = 16 << 10

func newDeadlineConn(c net.Conn) *deadlineConn {
	d := &deadlineConn{Conn: c, chunks: make(chan chunk, 2), free: make(chan []byte, 2), wake: make(chan struct{})}
	d.free <- make([]byte, deadlineBuf)
	d.free <- make([]byte, deadlineBuf)
	go d.readAhead()
	return d
}

func (d *deadlineConn) readAhead() {
	for b := range d.free {
		n, err := d.Conn.Read(b)
		d.chunks <- chunk{b[:n], err}
		if err != nil {
			return
		}
	}
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	for len(d.cur) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.buf != nil {
			d.free <- d.buf[:cap(d.buf)]
			d.buf = nil
		}
		if err := d.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, d.cur)
	d.cur = d.cur[n:]
	return n, nil
}

// next waits for the reader's next chunk until the read deadline.
func (d *deadlineConn) next() error {
	for {
		d.mu.Lock()
		dl, wake := d.deadline, d.wake
		d.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			wait := time.Until(dl)
			if wait <= 0 {
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case ch := <-d.chunks:
			d.cur, d.buf, d.err = ch.b, ch.b, ch.err
			return nil
		case <-timeout:
			return os.ErrDeadlineExceeded
		case <-wake:
		}
	}
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.deadline = t
	close(d.wake)
	d.wake = make(chan struct{})
	d.mu.Unlock()
	return nil // the read-ahead goroutine's read must not fail: only Read waits on the deadline
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	d.SetReadDeadline(t)
	return d.Conn.SetWriteDeadline(t)
}

// CloseWrite keeps half-close working for upgraded connections.
func (d *deadlineConn) CloseWrite() error {
	return l4.CloseWrite(d.Conn)
}
