package agent

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/l4"
	"github.com/hms-node/hms-node/pkg/agent/l7"
	"github.com/hms-node/hms-node/pkg/agent/registry"
)

// serveAuto serves a connection to a protocol: auto service (DESIGN §3):
// the upstream is dialled at once, so a server-first protocol's banner
// reaches the client without waiting; when the client speaks first and
// its first bytes are HTTP (before the server said anything), the
// connection is served at L7 and the early upstream connection is
// dropped; anything else stays L4 with nothing lost either way.
func (a *Agent) serveAuto(p *pod, c *net.TCPConn, tgt registry.Target) {
	up, local := a.dialService(p, c, tgt)
	if up == nil {
		return
	}
	s := &sniff{c: c, up: up, got: make(chan struct{})}
	go s.peekServer()
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	s.mu.Lock()
	serverFirst := s.serverSpoke
	http := !serverFirst && n > 0 && l7.LooksLikeHTTP(buf[:n])
	s.decided = true
	s.mu.Unlock()
	if http {
		up.Close() // ends peekServer; the server never saw a byte
		a.serveHTTP(p, &prefixConn{TCPConn: c, prefix: buf[:n]}, tgt)
		return
	}
	defer up.Close()
	if err != nil && !(serverFirst && errors.Is(err, os.ErrDeadlineExceeded)) {
		c.SetLinger(0) // the client reset or vanished before speaking
		return
	}
	c.SetReadDeadline(time.Time{})
	// Counted from the decision on; the replayed bytes pass the Pipe, so
	// they are in its counts.
	a.pipeLocal(p, local, &prefixConn{TCPConn: c, prefix: buf[:n]}, &peekedConn{Conn: up, s: s},
		a.tcpLabels(p, tgt.Service.Namespace, tgt.Service.Name, local)...)
}

// sniff holds the one read of the upstream made before the protocol is
// decided.
type sniff struct {
	c  *net.TCPConn
	up net.Conn

	buf  []byte
	err  error
	got  chan struct{} // closed when buf/err are set
	used bool          // peekedConn returned them

	mu          sync.Mutex
	decided     bool
	serverSpoke bool
}

// peekServer reads the upstream once; data before the decision means a
// server-first protocol, so it interrupts the client read to decide L4.
func (s *sniff) peekServer() {
	b := make([]byte, 4096)
	n, err := s.up.Read(b)
	s.buf, s.err = b[:n], err
	s.mu.Lock()
	if !s.decided && n > 0 {
		s.serverSpoke = true
		s.c.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	close(s.got)
}

// peekedConn is the upstream as seen after the decision: the peeked read
// first, then the connection itself.
type peekedConn struct {
	net.Conn
	s *sniff
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if !c.s.used {
		<-c.s.got
		if len(c.s.buf) > 0 {
			n := copy(p, c.s.buf)
			c.s.buf = c.s.buf[n:]
			return n, nil
		}
		c.s.used = true
		if c.s.err != nil {
			return 0, c.s.err
		}
	}
	return c.Conn.Read(p)
}

func (c *peekedConn) CloseWrite() error {
	return l4.CloseWrite(c.Conn)
}

// prefixConn replays bytes already read from the client.
type prefixConn struct {
	*net.TCPConn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}
