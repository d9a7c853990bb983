package control

import (
	"fmt"
	"net/netip"
)

// hostBits is the number of host bits of p.
func hostBits(p netip.Prefix) int { return p.Addr().BitLen() - p.Bits() }

// vipUsable reports whether ip may be handed out from cidr: inside it, not
// the network address nor the first address after it (kept for a gateway or
// DNS), not the last one, and for IPv4 not a ".0" or ".255" address, which
// some stacks still treat as network or broadcast addresses.
func vipUsable(cidr netip.Prefix, ip netip.Addr) bool {
	if !cidr.Contains(ip) || ip.Is4In6() {
		return false
	}
	base := cidr.Masked().Addr()
	if ip == base || ip == base.Next() || ip == lastAddr(cidr) {
		return false
	}
	if ip.Is4() {
		b := ip.As4()
		return b[3] != 0 && b[3] != 255
	}
	return true
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	host := hostBits(p)
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// vipPicker hands out the lowest usable addresses of a CIDR that are not in
// used. Lowest-first keeps VIPs small and makes a released VIP the next one
// handed out.
type vipPicker struct {
	cidr netip.Prefix
	used map[string]bool // VIPs taken, including the ones this picker gave
	next netip.Addr      // where the scan resumes
}

func newVIPPicker(cidr netip.Prefix, used map[string]bool) *vipPicker {
	return &vipPicker{cidr: cidr, used: used, next: cidr.Masked().Addr()}
}

// pick returns the lowest free VIP and marks it used.
func (p *vipPicker) pick() (string, error) {
	for ip := p.next; ip.IsValid() && p.cidr.Contains(ip); ip = ip.Next() {
		if !vipUsable(p.cidr, ip) || p.used[ip.String()] {
			continue
		}
		p.next = ip.Next()
		p.used[ip.String()] = true
		return ip.String(), nil
	}
	return "", fmt.Errorf("vip range %s is exhausted", p.cidr)
}

// claim checks a VIP requested by a client: usable and free. It marks it used.
func (p *vipPicker) claim(vip string) error {
	ip, err := netip.ParseAddr(vip)
	if err != nil {
		return fmt.Errorf("vip %q is not an IP address", vip)
	}
	if !vipUsable(p.cidr, ip) {
		return fmt.Errorf("vip %s is not a usable address of %s", vip, p.cidr)
	}
	if p.used[ip.String()] {
		return errVIPTaken
	}
	p.used[ip.String()] = true
	return nil
}
