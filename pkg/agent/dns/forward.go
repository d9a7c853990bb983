package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// resolvConf is where SystemUpstreams reads the node's resolvers.
const resolvConf = "/etc/resolv.conf"

// SystemUpstreams returns the nameservers of the node's /etc/resolv.conf as
// "ip:port", in file order, or nil when it cannot be read. The agent reads
// it in the root netns, so a node-local stub (127.0.0.53) is reachable.
func SystemUpstreams() []string { return upstreamsFrom(resolvConf) }

func upstreamsFrom(path string) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(cc.Servers))
	for _, srv := range cc.Servers {
		out = append(out, net.JoinHostPort(srv, cc.Port))
	}
	return out
}

func (s *Server) upstreams() []string {
	if len(s.Upstreams) > 0 {
		return s.Upstreams
	}
	s.sysOnce.Do(func() { s.sys = SystemUpstreams() })
	return s.sys
}

// forward relays req to the upstreams in order, over the client's own
// transport, and relays the first usable reply byte for byte. A SERVFAIL
// or REFUSED reply moves on to the next upstream, as glibc does, and is
// relayed only when no upstream does better; no reply at all is SERVFAIL.
func (s *Server) forward(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	out := req.Copy()
	out.Question = out.Question[:1] // upstreams would refuse several
	packed, err := out.Pack()
	if err != nil {
		s.writeMsg(w, failure(req, dns.RcodeFormatError))
		return
	}
	var last []byte
	for _, up := range s.upstreams() {
		p, rcode, err := s.exchange(network, up, packed, req.Id)
		if err != nil {
			s.log().Debug("dns forward", "upstream", up, "name", req.Question[0].Name, "err", err)
			continue
		}
		last = p
		if rcode != dns.RcodeServerFailure && rcode != dns.RcodeRefused {
			break
		}
	}
	if last == nil {
		s.log().Warn("dns forward: no upstream answered", "name", req.Question[0].Name, "upstreams", len(s.upstreams()))
		s.writeMsg(w, failure(req, dns.RcodeServerFailure))
		return
	}
	if _, err := w.Write(last); err != nil {
		s.log().Debug("dns write reply", "client", w.RemoteAddr(), "err", err)
	}
}

// exchange sends the packed query to one upstream and returns its raw reply
// and rcode. Over UDP, packets that are not the reply (wrong ID, not a
// response) are skipped until the deadline, as a stub resolver does.
func (s *Server) exchange(network, addr string, query []byte, id uint16) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout())
	defer cancel()
	dial := s.Forward
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, network, addr)
	if err != nil {
		return nil, 0, fmt.Errorf("dial %s %s: %w", network, addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	co := &dns.Conn{Conn: c, UDPSize: dns.MaxMsgSize}
	if _, err := co.Write(query); err != nil {
		return nil, 0, fmt.Errorf("send to %s: %w", addr, err)
	}
	for {
		var h dns.Header
		p, err := co.ReadMsgHeader(&h)
		if err != nil {
			return nil, 0, fmt.Errorf("read from %s: %w", addr, err)
		}
		if h.Id == id && h.Bits&qrBit != 0 {
			return p, int(h.Bits & 0xF), nil
		}
		if network == "tcp" {
			return nil, 0, errors.New("reply id mismatch from " + addr)
		}
	}
}

func (s *Server) timeout() time.Duration {
	if s.Timeout <= 0 {
		return defaultTimeout
	}
	return s.Timeout
}

func failure(req *dns.Msg, rcode int) *dns.Msg {
	m := reply(req)
	m.Rcode = rcode
	return m
}
