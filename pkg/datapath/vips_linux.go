package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// vipRangeWords returns the range's network and mask as the u32 words the
// programs compare against (network byte order in memory).
func vipRangeWords(p netip.Prefix) (uint32, uint32) {
	a := p.Masked().Addr().As4()
	m := net.CIDRMask(p.Bits(), 32)
	return binary.LittleEndian.Uint32(a[:]), binary.LittleEndian.Uint32(m)
}

func vipKey(vp netip.AddrPort) (connectVipkey, error) {
	if !vp.Addr().Unmap().Is4() {
		return connectVipkey{}, fmt.Errorf("VIP %s: only IPv4 VIPs are supported", vp)
	}
	a := vp.Addr().Unmap().As4()
	return connectVipkey{Vip: binary.LittleEndian.Uint32(a[:]), Port: uint32(vp.Port())}, nil
}

// SetVIP records that a service (by the agent's id) answers on vp.
func (d *Datapath) SetVIP(vp netip.AddrPort, id uint32) error {
	k, err := vipKey(vp)
	if err != nil {
		return err
	}
	if err := d.maps["hms_vips"].Put(k, id); err != nil {
		return fmt.Errorf("set VIP %s: %w", vp, err)
	}
	return nil
}

// DeleteVIP forgets vp; a VIP already gone is fine.
func (d *Datapath) DeleteVIP(vp netip.AddrPort) error {
	k, err := vipKey(vp)
	if err != nil {
		return err
	}
	if err := d.maps["hms_vips"].Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete VIP %s: %w", vp, err)
	}
	return nil
}

// VIPs returns every VIP:port in the map, as left by this agent or a
// predecessor; the agent reconciles it with the registry at start.
func (d *Datapath) VIPs() (map[netip.AddrPort]uint32, error) {
	out := map[netip.AddrPort]uint32{}
	var k connectVipkey
	var v uint32
	it := d.maps["hms_vips"].Iterate()
	for it.Next(&k, &v) {
		var a [4]byte
		binary.LittleEndian.PutUint32(a[:], k.Vip)
		out[netip.AddrPortFrom(netip.AddrFrom4(a), uint16(k.Port))] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read VIPs: %w", err)
	}
	return out, nil
}
