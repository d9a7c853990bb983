package testapp

import (
	"net"

	"github.com/miekg/dns"
)

// ServeDNS answers A queries for name with ip, and NXDOMAIN for anything
// else: the local fake resolver of the DNS tests (never the machine's).
func ServeDNS(pc net.PacketConn, name string, ip net.IP) error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Name == dns.Fqdn(name) && q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
				A:   ip.To4(),
			})
		} else if len(q.Question) == 1 && q.Question[0].Name == dns.Fqdn(name) {
			// The name exists, with no record of this type (AAAA).
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	return (&dns.Server{PacketConn: pc, Handler: h}).ActivateAndServe()
}
