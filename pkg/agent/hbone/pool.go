package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Port is the HBONE port a destination pod listens on.
const Port = 15008

// Key identifies a pool of HBONE connections: tunnels share a connection
// only when source identity, destination identity and destination pod IP
// all match.
type Key struct {
	Src, Dst string     // SPIFFE IDs
	IP       netip.Addr // destination pod IP
}

// PoolStats is a snapshot of a Pool, for tests and metrics.
type PoolStats struct {
	Connections int    // open HBONE connections, draining ones included
	Streams     int    // open tunnels
	Handshakes  uint64 // TLS handshakes completed since the pool was made
}

// Pool is the client side of HBONE: HTTP/2 connections per Key, each
// carrying up to MaxStreams tunnels. The zero value needs Dial and TLS set.
type Pool struct {
	// Dial makes the TCP connection to ip:15008 (the agent dials from
	// inside the calling pod's netns).
	Dial func(ctx context.Context, ip netip.Addr) (net.Conn, error)
	// TLS returns the client config for a key (client certificate of Src,
	// verification that the server is Dst). The pool clones it and forces
	// ALPN "h2" and TLS 1.3.
	TLS func(k Key) *tls.Config
	// MaxStreams is the number of concurrent tunnels per connection before
	// another is opened; 0 means 100. A lower limit advertised by the
	// server wins.
	MaxStreams int
	// IdleTimeout closes a connection that carried no tunnel for that
	// long; 0 means 90s.
	IdleTimeout time.Duration
	// Log receives connection-level events; nil discards them.
	Log *slog.Logger

	initOnce   sync.Once
	handshakes atomic.Uint64

	// mu guards the fields below.
	mu       sync.Mutex
	conns    map[Key][]*pconn    // usable for new tunnels (or being dialled)
	draining map[*pconn]struct{} // retired, closing once their tunnels end
	closed   bool
}

// pconn is one HBONE connection. Its fields other than ready, mc, tc and
// err are guarded by Pool.mu; those are written once before ready closes.
type pconn struct {
	key     Key
	ready   chan struct{}
	mc      *mux
	tc      *tls.Conn
	err     error
	active  int // tunnels reserved or open
	retired bool
}

var errPoolClosed = errors.New("hbone: pool closed")

func (p *Pool) init() {
	p.initOnce.Do(func() {
		if p.Log == nil {
			p.Log = slog.New(slog.DiscardHandler)
		}
		p.conns = make(map[Key][]*pconn)
		p.draining = make(map[*pconn]struct{})
	})
}

func (p *Pool) idleTimeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return 90 * time.Second
}

func (p *Pool) maxStreams() int {
	if p.MaxStreams > 0 {
		return p.MaxStreams
	}
	return 100
}

// Connect opens a tunnel to authority ("<endpoint-ip>:<port>") with the
// given headers (Forwarded, traceparent: set by the caller; Connect adds
// only what CONNECT needs). It reuses a pooled connection with room, so a
// warm pool does no TLS handshake. ctx bounds the dial and the CONNECT
// exchange, not the tunnel's life. A non-200 answer is a *StatusError
// (403 wraps ErrDenied).
func (p *Pool) Connect(ctx context.Context, k Key, authority string, hdr http.Header) (net.Conn, error) {
	p.init()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var pc *pconn
		var retry bool
		pc, retry, err = p.acquire(ctx, k)
		if err != nil {
			if !retry || ctx.Err() != nil {
				return nil, err
			}
			continue // another caller's dial failed, or its conn was retired: dial our own
		}
		var c net.Conn
		c, retry, err = p.open(ctx, pc, authority, hdr)
		if err == nil {
			return c, nil
		}
		p.release(pc)
		if !retry || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, err
}

// acquire reserves a stream slot on a usable connection for k, dialling
// one when none has room. retry reports a failure that a fresh dial may
// not share (we waited on another caller's dial, or on a retired conn).
func (p *Pool) acquire(ctx context.Context, k Key) (_ *pconn, retry bool, _ error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, errPoolClosed
	}
	pc := p.pickLocked(k)
	dial := pc == nil
	if dial {
		pc = &pconn{key: k, ready: make(chan struct{}), active: 1}
		p.conns[k] = append(p.conns[k], pc)
	}
	p.mu.Unlock()

	if dial {
		p.dial(ctx, pc)
	} else {
		select {
		case <-pc.ready:
		case <-ctx.Done():
			p.release(pc)
			return nil, false, ctx.Err()
		}
	}
	if pc.err != nil {
		p.release(pc)
		return nil, !dial && !errors.Is(pc.err, errPoolClosed), pc.err
	}
	p.mu.Lock()
	retired := pc.retired
	p.mu.Unlock()
	if retired {
		p.release(pc)
		return nil, true, errors.New("hbone: connection retired while dialling")
	}
	return pc, false, nil
}

// pickLocked returns a connection for k with a free slot, already
// reserved, dropping dead ones from the list on the way.
func (p *Pool) pickLocked(k Key) *pconn {
	list := p.conns[k]
	var found *pconn
	for i := 0; i < len(list); i++ {
		pc := list[i]
		if isReady(pc) && (pc.err != nil || !pc.mc.canOpen()) {
			list = slices.Delete(list, i, i+1)
			i--
			if pc.err == nil && p.retireLocked(pc) {
				pc.mc.Close() // dead already; Close frees its resources
			}
			continue
		}
		if found == nil && pc.active < p.limit(pc) {
			found = pc
		}
	}
	if len(list) == 0 {
		delete(p.conns, k)
	} else {
		p.conns[k] = list
	}
	if found != nil {
		found.active++
	}
	return found
}

func isReady(pc *pconn) bool {
	select {
	case <-pc.ready:
		return true
	default:
		return false
	}
}

// limit is MaxStreams, or the server's SETTINGS_MAX_CONCURRENT_STREAMS
// when lower.
func (p *Pool) limit(pc *pconn) int {
	n := p.maxStreams()
	if isReady(pc) && pc.mc != nil {
		if m := int(pc.mc.maxStreams()); m > 0 && m < n {
			n = m
		}
	}
	return n
}

// release gives back a stream slot on pc; a retired connection closes
// when its last tunnel does.
func (p *Pool) release(pc *pconn) {
	p.mu.Lock()
	pc.active--
	closeNow := pc.retired && pc.active == 0 && pc.mc != nil
	if closeNow {
		delete(p.draining, pc)
	}
	p.mu.Unlock()
	if closeNow {
		pc.mc.Close()
	}
}

// Retire stops using the connections whose key matches for new tunnels
// (after a certificate rotation or a revocation, say). Their tunnels carry
// on; each connection closes when its last tunnel does.
func (p *Pool) Retire(match func(Key) bool) {
	p.init()
	var idle []*pconn
	p.mu.Lock()
	for k, list := range p.conns {
		if !match(k) {
			continue
		}
		for _, pc := range list {
			if p.retireLocked(pc) {
				idle = append(idle, pc)
			}
		}
		delete(p.conns, k)
	}
	p.mu.Unlock()
	for _, pc := range idle {
		pc.mc.Close()
	}
}

// retireLocked marks pc retired and reports whether it should be closed
// now (it is dialled and idle). A connection still dialling is closed by
// the last release of its waiters.
func (p *Pool) retireLocked(pc *pconn) bool {
	pc.retired = true
	if !isReady(pc) || pc.mc == nil {
		return false
	}
	pc.mc.noNewStreams()
	if pc.active == 0 {
		return true
	}
	p.draining[pc] = struct{}{}
	return false
}

// Stats returns a snapshot of the pool.
func (p *Pool) Stats() PoolStats {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := PoolStats{Handshakes: p.handshakes.Load()}
	count := func(pc *pconn) {
		s.Streams += pc.active
		if isReady(pc) && pc.mc != nil && !pc.mc.dead() {
			s.Connections++
		}
	}
	for _, list := range p.conns {
		for _, pc := range list {
			count(pc)
		}
	}
	for pc := range p.draining {
		count(pc)
	}
	return s
}

// Close closes every connection, interrupting their tunnels. Idempotent.
func (p *Pool) Close() error {
	p.init()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var all []*pconn
	for _, list := range p.conns {
		all = append(all, list...)
	}
	for pc := range p.draining {
		all = append(all, pc)
	}
	p.conns, p.draining = map[Key][]*pconn{}, map[*pconn]struct{}{}
	p.mu.Unlock()
	for _, pc := range all {
		if isReady(pc) && pc.mc != nil { // a dial under way closes its own conn
			pc.mc.Close()
		}
	}
	return nil
}
