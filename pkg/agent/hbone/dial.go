package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/net/http2"
)

// dial makes pc's TCP, TLS and HTTP/2 connection, then closes pc.ready
// (under mu, so that Close and Retire see either a dialling conn or a
// ready one, never a conn they would miss).
func (p *Pool) dial(ctx context.Context, pc *pconn) {
	mc, tc, err := p.handshake(ctx, pc.key)
	if err == nil {
		p.handshakes.Add(1)
	} else {
		p.Log.Debug("hbone dial failed", "dst", pc.key.Dst, "ip", pc.key.IP, "err", err)
	}
	p.mu.Lock()
	closed := p.closed
	switch {
	case err != nil:
		pc.err = err
	case closed:
		pc.err = errPoolClosed
	default:
		pc.mc, pc.tc = mc, tc
		if pc.retired { // retired while dialling: drain like the others
			p.retireLocked(pc)
		}
	}
	close(pc.ready)
	p.mu.Unlock()
	if err == nil && closed {
		mc.Close()
	}
}

// Keepalive of pooled connections: ping a peer silent this long, and
// give up on it when the ping goes unanswered.
const (
	readIdleTimeout = 30 * time.Second
	pingTimeout     = 15 * time.Second
)

func (p *Pool) handshake(ctx context.Context, k Key) (*mux, *tls.Conn, error) {
	if p.Dial == nil || p.TLS == nil {
		return nil, nil, errors.New("hbone: pool needs Dial and TLS")
	}
	raw, err := p.Dial(ctx, k.IP)
	if err != nil {
		return nil, nil, fmt.Errorf("hbone: dial %s: %w", k.IP, err)
	}
	cfg := p.TLS(k)
	if cfg == nil {
		raw.Close()
		return nil, nil, fmt.Errorf("hbone: no tls config for %s", k.Dst)
	}
	cfg = cfg.Clone()
	if !slices.Contains(cfg.NextProtos, http2.NextProtoTLS) {
		cfg.NextProtos = append(cfg.NextProtos, http2.NextProtoTLS)
	}
	cfg.MinVersion = tls.VersionTLS13
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, nil, fmt.Errorf("hbone: tls handshake with %s: %w", k.IP, err)
	}
	if proto := tc.ConnectionState().NegotiatedProtocol; proto != http2.NextProtoTLS {
		tc.Close()
		return nil, nil, fmt.Errorf("hbone: %s negotiated %q, want h2", k.IP, proto)
	}
	mc := newMux(tc, true)
	if err := mc.start(); err != nil {
		return nil, nil, fmt.Errorf("hbone: http2 preface to %s: %w", k.IP, err)
	}
	go mc.keepalive(p.idleTimeout(), readIdleTimeout, pingTimeout)
	return mc, tc, nil
}

// open sends the CONNECT on pc. retry reports that the connection became
// unusable, so another may be tried.
func (p *Pool) open(ctx context.Context, pc *pconn, authority string, hdr http.Header) (net.Conn, bool, error) {
	st, code, err := pc.mc.open(ctx.Done(), authority, hdr)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, !pc.mc.canOpen(), fmt.Errorf("hbone: connect %s: %w", authority, err)
	}
	if code != http.StatusOK {
		st.Close()
		return nil, false, fmt.Errorf("hbone: connect %s: %w", authority, &StatusError{Code: code})
	}
	st.local, st.remote = pc.tc.LocalAddr(), pc.tc.RemoteAddr()
	if ap, err := netip.ParseAddrPort(authority); err == nil {
		st.remote = net.TCPAddrFromAddrPort(ap)
	}
	st.onClose = func() { p.release(pc) }
	return st, false, nil
}
