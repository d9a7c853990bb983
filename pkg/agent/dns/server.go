package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Resolver answers mesh names; the agent's registry table implements it.
//
// name is the question's name lowercased and without the trailing dot, e.g.
// "notify-svc.default.svc". found reports a mesh service of that name with
// its vip; mesh reports that the name lies under a mesh suffix (.svc, .mesh)
// even when no such service exists, so the server answers NXDOMAIN itself
// rather than leaking the name to the upstreams.
type Resolver interface {
	LookupName(name string) (vip netip.Addr, found, mesh bool)
}

// Server answers DNS queries of one agent for every enrolled pod. The zero
// value forwards everything to the node's resolv.conf servers; one Server
// may serve many sockets at once.
type Server struct {
	// Resolver answers mesh names. Nil: no name is a mesh name.
	Resolver Resolver

	// Upstreams are "ip:port" resolvers tried in order for every non-mesh
	// name. Empty: SystemUpstreams(), read once.
	Upstreams []string

	// Forward dials an upstream ("udp" or "tcp", the client's transport);
	// the agent dials from the root netns. Nil: a net.Dialer.
	Forward func(ctx context.Context, network, addr string) (net.Conn, error)

	// TTL of mesh answers in seconds. Zero: 5.
	TTL uint32

	// Timeout for one upstream exchange, dial included. Zero: 2s.
	Timeout time.Duration

	// Log receives forwarding failures. Nil: discarded.
	Log *slog.Logger

	sysOnce sync.Once
	sys     []string // SystemUpstreams, when Upstreams is empty
}

const (
	defaultTTL     = 5
	defaultTimeout = 2 * time.Second
	// ednsSize is the UDP payload size advertised in our own answers
	// (the DNS flag day 2020 value, safe against fragmentation).
	ednsSize = 1232
	// qrBit marks a response in dns.Header.Bits.
	qrBit = 1 << 15
)

// ServePacket answers queries arriving on pc (UDP). It returns nil once pc
// is closed and the queries in flight are answered.
func (s *Server) ServePacket(pc net.PacketConn) error {
	srv := s.newServer()
	srv.PacketConn = pc
	return ignoreClosed(srv.ActivateAndServe())
}

// ServeStream answers DNS over TCP on l, used by clients whose UDP answer
// came back truncated. It returns nil once l is closed; open client
// connections are then closed too rather than left to idle out.
func (s *Server) ServeStream(l net.Listener) error {
	srv := s.newServer()
	var once sync.Once
	srv.Listener = &notifyListener{Listener: l, onErr: func() {
		// Shutdown unblocks the open connections' reads. It waits for the
		// accept loop to end, which waits for this Accept to return: so it
		// must run on its own goroutine.
		once.Do(func() { go srv.Shutdown() })
	}}
	return ignoreClosed(srv.ActivateAndServe())
}

func (s *Server) newServer() *dns.Server {
	return &dns.Server{
		Handler:       dns.HandlerFunc(s.serveDNS),
		UDPSize:       dns.DefaultMsgSize, // read buffer for queries
		MsgAcceptFunc: acceptQuery,
	}
}

// acceptQuery is dns.DefaultMsgAcceptFunc without its "exactly one
// question" rule: a query with several questions gets the first answered.
func acceptQuery(h dns.Header) dns.MsgAcceptAction {
	if h.Bits&qrBit != 0 {
		return dns.MsgIgnore // a response; never answer those
	}
	if opcode := int(h.Bits>>11) & 0xF; opcode != dns.OpcodeQuery {
		return dns.MsgRejectNotImplemented
	}
	if h.Qdcount == 0 {
		return dns.MsgReject
	}
	return dns.MsgAccept
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	q := req.Question[0] // acceptQuery guarantees one
	if s.Resolver != nil {
		name := strings.ToLower(strings.TrimSuffix(q.Name, "."))
		if vip, found, mesh := s.Resolver.LookupName(name); found || mesh {
			s.writeMsg(w, s.meshReply(req, q, vip, found))
			return
		}
	}
	s.forward(w, req)
}

// meshReply answers q authoritatively: the VIP for an address query of a
// known service, NOERROR without answers (NODATA) for any other type, so
// that a client asking A and AAAA in parallel uses the A record, and
// NXDOMAIN for an unknown mesh name.
func (s *Server) meshReply(req *dns.Msg, q dns.Question, vip netip.Addr, found bool) *dns.Msg {
	m := reply(req)
	m.Authoritative = true
	if !found {
		m.Rcode = dns.RcodeNameError
		return m
	}
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return m
	}
	vip = vip.Unmap()
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: s.ttl()}
	switch {
	case vip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeA
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: vip.AsSlice()})
	case vip.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeAAAA
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: vip.AsSlice()})
	}
	return m
}

// reply starts a reply we build ourselves to req's first question,
// echoing EDNS(0) when the query used it (RFC 6891 §7).
func reply(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg).SetReply(req)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(ednsSize, opt.Do())
	}
	return m
}

func (s *Server) writeMsg(w dns.ResponseWriter, m *dns.Msg) {
	if err := w.WriteMsg(m); err != nil {
		s.log().Debug("dns write reply", "client", w.RemoteAddr(), "err", err)
	}
}

func (s *Server) ttl() uint32 {
	if s.TTL == 0 {
		return defaultTTL
	}
	return s.TTL
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// notifyListener calls onErr when Accept fails because the listener was
// closed.
type notifyListener struct {
	net.Listener
	onErr func()
}

func (l *notifyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if errors.Is(err, net.ErrClosed) {
		l.onErr()
	}
	return c, err
}
