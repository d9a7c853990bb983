package control

import (
	"net/netip"
	"strconv"
	"testing"
)

func itoa(i int) string { return strconv.Itoa(i) }

func TestVIPPicker(t *testing.T) {
	cidr := netip.MustParsePrefix("10.9.0.0/23")
	p := newVIPPicker(cidr, map[string]bool{"10.9.0.3": true})
	var got []string
	for range 3 {
		v, err := p.pick()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if got[0] != "10.9.0.2" || got[1] != "10.9.0.4" || got[2] != "10.9.0.5" {
		t.Fatalf("picked %v", got)
	}
	for _, bad := range []string{"10.9.0.0", "10.9.0.1", "10.9.0.255", "10.9.1.0", "10.9.1.255", "10.9.2.1"} {
		if vipUsable(cidr, netip.MustParseAddr(bad)) {
			t.Errorf("%s usable", bad)
		}
	}
	if err := p.claim("10.9.0.4"); err != errVIPTaken {
		t.Fatalf("claim taken: %v", err)
	}
	small := newVIPPicker(netip.MustParsePrefix("10.0.0.0/30"), map[string]bool{})
	if v, err := small.pick(); v != "10.0.0.2" || err != nil {
		t.Fatalf("/30: %s %v", v, err)
	}
	if _, err := small.pick(); err == nil {
		t.Fatal("/30 handed out a second vip")
	}
	if l := lastAddr(netip.MustParsePrefix("fd00::/120")); l.String() != "fd00::ff" {
		t.Fatalf("lastAddr v6 = %s", l)
	}
}
