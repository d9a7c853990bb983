package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"

	"golang.org/x/net/http2"
)

// dial makes pc's TCP, TLS and HTTP/2 connection, then closes pc.ready
// (under mu, so that Close and Retire see either a dialling conn or a
// ready one, never a conn they would miss).
func (p *Pool) dial(ctx context.Context, pc *pconn) {
	cc, tc, err := p.handshake(ctx, pc.key)
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
		pc.cc, pc.tc = cc, tc
		if pc.retired { // retired while dialling: drain like the others
			p.retireLocked(pc)
		}
	}
	close(pc.ready)
	p.mu.Unlock()
	if err == nil && closed {
		cc.Close()
	}
}

func (p *Pool) handshake(ctx context.Context, k Key) (*http2.ClientConn, *tls.Conn, error) {
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
	// NewClientConn is deprecated in favour of net/http's HTTP/2 client,
	// which offers no way to run CONNECT over a conn we dialled ourselves.
	cc, err := p.t.NewClientConn(tc)
	if err != nil {
		tc.Close()
		return nil, nil, fmt.Errorf("hbone: http2 client conn to %s: %w", k.IP, err)
	}
	return cc, tc, nil
}

// open sends the CONNECT on pc. retry reports that the request never left
// because the connection became unusable, so another may be tried.
func (p *Pool) open(ctx context.Context, pc *pconn, authority string, hdr http.Header) (net.Conn, bool, error) {
	h := make(http.Header, len(hdr)+1)
	for name, v := range hdr {
		h[name] = v
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // x/net sends no user-agent for an empty one
	}
	sctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	pr, pw := io.Pipe()
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: authority},
		Host:          authority,
		Header:        h,
		Body:          pr,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(sctx)
	resp, err := pc.cc.RoundTrip(req)
	if !stop() && err == nil {
		err = ctx.Err() // ctx ended while the answer arrived: don't hand out the tunnel
		resp.Body.Close()
	}
	if err != nil {
		cancel()
		pw.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, !pc.cc.CanTakeNewRequest(), fmt.Errorf("hbone: connect %s: %w", authority, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		pw.Close()
		return nil, false, fmt.Errorf("hbone: connect %s: %w", authority, &StatusError{Code: resp.StatusCode})
	}
	var remote net.Addr = pc.tc.RemoteAddr()
	if ap, err := netip.ParseAddrPort(authority); err == nil {
		remote = net.TCPAddrFromAddrPort(ap)
	}
	return &tunnel{
		pw:     pw,
		body:   resp.Body,
		local:  pc.tc.LocalAddr(),
		remote: remote,
		release: func() {
			cancel()
			p.release(pc)
		},
	}, false, nil
}
