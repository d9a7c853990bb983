package dns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var vip = netip.MustParseAddr("240.240.0.10")

// fakeResolver knows notify-svc in the default namespace under both mesh
// suffixes, as the registry table would.
type fakeResolver struct{}

func (fakeResolver) LookupName(name string) (netip.Addr, bool, bool) {
	mesh := strings.HasSuffix(name, ".svc") || strings.HasSuffix(name, ".mesh")
	switch name {
	case "notify-svc.svc", "notify-svc.default.svc", "notify-svc.mesh", "notify-svc.default.mesh":
		return vip, true, true
	}
	return netip.Addr{}, false, mesh
}

// serveUDP runs s on a fresh loopback UDP socket and returns its address;
// cleanup closes the socket and checks ServePacket returned nil.
func serveUDP(t *testing.T, s *Server) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServePacket(pc) }()
	t.Cleanup(func() {
		pc.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ServePacket: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("ServePacket did not return after close")
		}
	})
	return pc.LocalAddr().String()
}

// fakeUpstream is a miekg server on loopback answering every A query with
// ip, or with rcode when rcode is not success.
func fakeUpstream(t *testing.T, network string, ip string, rcode int) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg).SetRcode(q, rcode)
		if rcode == dns.RcodeSuccess {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
				A:   net.ParseIP(ip),
			})
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{Handler: h}
	var addr string
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener, addr = l, l.Addr().String()
	} else {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.PacketConn, addr = pc, pc.LocalAddr().String()
	}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return addr
}

// closedUDPPort returns a loopback address nothing listens on: the kernel
// refuses datagrams to it at once.
func closedUDPPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func query(t *testing.T, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg).SetQuestion(name, qtype)
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s %s: %v", name, dns.TypeToString[qtype], err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply id %d, want %d", r.Id, m.Id)
	}
	return r
}

func wantVIP(t *testing.T, r *dns.Msg, name string) {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
		t.Fatalf("%s: rcode %s aa=%v answers %d, want one authoritative A", name, dns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok || !a.A.Equal(vip.AsSlice()) || a.Hdr.Ttl != 5 || a.Hdr.Name != name {
		t.Fatalf("%s: answer %v, want %s A %s TTL 5", name, r.Answer[0], name, vip)
	}
}

func TestMeshNamesResolveToVIP(t *testing.T) {
	addr := serveUDP(t, &Server{Resolver: fakeResolver{}, Upstreams: []string{closedUDPPort(t)}})
	for _, name := range []string{"notify-svc.svc.", "notify-svc.default.svc.", "notify-svc.mesh.", "notify-svc.default.mesh.", "Notify-Svc.Default.SVC."} {
		wantVIP(t, query(t, "udp", addr, name, dns.TypeA), name)
	}
}

func TestMeshNameOtherTypesNoData(t *testing.T) {
	addr := serveUDP(t, &Server{Resolver: fakeResolver{}, Upstreams: []string{closedUDPPort(t)}})
	for _, qt := range []uint16{dns.TypeAAAA, dns.TypeTXT, dns.TypeMX} {
		r := query(t, "udp", addr, "notify-svc.default.svc.", qt)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || !r.Authoritative {
			t.Errorf("%s: rcode %s answers %v, want authoritative NOERROR empty", dns.TypeToString[qt], dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
}

func TestUnknownMeshNameNXDOMAIN(t *testing.T) {
	var dials atomic.Int32
	s := &Server{Resolver: fakeResolver{}, Upstreams: []string{closedUDPPort(t)},
		Forward: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	addr := serveUDP(t, s)
	for _, name := range []string{"nope.svc.", "notify-svc.other.mesh."} {
		r := query(t, "udp", addr, name, dns.TypeA)
		if r.Rcode != dns.RcodeNameError || !r.Authoritative {
			t.Errorf("%s: rcode %s aa=%v, want authoritative NXDOMAIN", name, dns.RcodeToString[r.Rcode], r.Authoritative)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("mesh names reached the upstreams (%d dials)", n)
	}
}

func TestForwardInOrderThroughForwardDialer(t *testing.T) {
	good := fakeUpstream(t, "udp", "192.0.2.7", dns.RcodeSuccess)
	failing := fakeUpstream(t, "udp", "", dns.RcodeServerFailure)
	var dialed []string
	dialedc := make(chan string, 10)
	s := &Server{Resolver: fakeResolver{}, Upstreams: []string{closedUDPPort(t), failing, good},
		Forward: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialedc <- network + " " + addr
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}
	addr := serveUDP(t, s)
	start := time.Now()
	r := query(t, "udp", addr, "example.org.", dns.TypeA)
	if time.Since(start) > time.Second {
		t.Errorf("took %v: a refused upstream should be skipped at once", time.Since(start))
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("rcode %s answers %v, want the upstream's answer", dns.RcodeToString[r.Rcode], r.Answer)
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != "192.0.2.7" || a.Hdr.Ttl != 300 || r.Authoritative {
		t.Fatalf("answer %v aa=%v, want the upstream's 192.0.2.7 TTL 300 relayed as is", r.Answer[0], r.Authoritative)
	}
	for len(dialedc) > 0 {
		dialed = append(dialed, <-dialedc)
	}
	want := []string{"udp " + s.Upstreams[0], "udp " + failing, "udp " + good}
	if !slices.Equal(dialed, want) {
		t.Errorf("dialed %v, want %v", dialed, want)
	}
}

func TestForwardAllDownSERVFAIL(t *testing.T) {
	// A socket that reads and never replies: the upstream times out.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	addr := serveUDP(t, &Server{Upstreams: []string{closedUDPPort(t), silent.LocalAddr().String()}})
	start := time.Now()
	r := query(t, "udp", addr, "example.org.", dns.TypeA)
	took := time.Since(start)
	if r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if took < 1500*time.Millisecond || took > 3*time.Second {
		t.Errorf("SERVFAIL after %v, want about the 2s upstream timeout", took)
	}
}

func TestEDNSAndSeveralQuestions(t *testing.T) {
	addr := serveUDP(t, &Server{Resolver: fakeResolver{}, Upstreams: []string{closedUDPPort(t)}})
	m := new(dns.Msg).SetQuestion("notify-svc.svc.", dns.TypeA)
	m.Question = append(m.Question, dns.Question{Name: "other.svc.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	m.SetEdns0(4096, true)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Question) != 1 || r.Question[0].Name != "notify-svc.svc." {
		t.Errorf("questions %v, want the first one only", r.Question)
	}
	wantVIP(t, r, "notify-svc.svc.")
	if opt := r.IsEdns0(); opt == nil || !opt.Do() {
		t.Errorf("reply OPT %v, want EDNS(0) echoed with DO", opt)
	}
}

func TestStream(t *testing.T) {
	up := fakeUpstream(t, "tcp", "192.0.2.7", dns.RcodeSuccess)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- (&Server{Resolver: fakeResolver{}, Upstreams: []string{up}}).ServeStream(l) }()
	addr := l.Addr().String()

	wantVIP(t, query(t, "tcp", addr, "notify-svc.default.mesh.", dns.TypeA), "notify-svc.default.mesh.")
	r := query(t, "tcp", addr, "example.org.", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("answers %v, want 192.0.2.7 forwarded over TCP", r.Answer)
	}

	// An idle client connection must not hold ServeStream open after close.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond)
	l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeStream: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("ServeStream did not return after close")
	}
}

func TestIPv6Loopback(t *testing.T) {
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	go (&Server{Resolver: fakeResolver{}}).ServePacket(pc)
	defer pc.Close()
	wantVIP(t, query(t, "udp", pc.LocalAddr().String(), "notify-svc.svc.", dns.TypeA), "notify-svc.svc.")
}

func TestUpstreamsFromResolvConf(t *testing.T) {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "# node\nsearch example.internal\nnameserver 10.0.0.2\nnameserver fd00::53\noptions ndots:2\n"
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	got := upstreamsFrom(p)
	if want := []string{"10.0.0.2:53", "[fd00::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v", got, want)
	}
	if got := upstreamsFrom(filepath.Join(t.TempDir(), "missing")); got != nil {
		t.Errorf("missing file: %v, want nil", got)
	}
}
