package testapp

import (
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// QueryUnconnected asks server for name's A record from an unconnected UDP
// socket (sendto/recvfrom, as some resolvers do) and checks the reply
// comes from the address it asked, which is what musl requires.
func QueryUnconnected(server, name string) (string, error) {
	pc, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return "", err
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	wire, _ := q.Pack()
	if _, err := pc.WriteTo(wire, to); err != nil {
		return "", fmt.Errorf("sendto %s: %w", server, err)
	}
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFrom(buf)
	if err != nil {
		return "", err
	}
	if from.String() != to.String() {
		return "", fmt.Errorf("reply came from %s, not %s", from, to)
	}
	var m dns.Msg
	if err := m.Unpack(buf[:n]); err != nil {
		return "", err
	}
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String(), nil
		}
	}
	return "", fmt.Errorf("no A record in reply (rcode %d)", m.Rcode)
}
