package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"structs"

	"github.com/cilium/ebpf"
)

// Shortcut is one same-node L4 connection the agent relays between two
// applications of its node (client -> 15001 -> agent -> server's
// loopback). Each direction can be moved into the kernel once the agent
// has relayed every byte sent that way so far (bpf/skmsg.c): from then on
// sk_msg puts the sender's messages straight into the other application's
// receive queue, and the agent only waits for the connection's end. Order
// is kept by construction: the switch is a compare-and-swap against the
// kernel's count of bytes sent the agent's way, so it succeeds only when
// none is still queued at, or on its way to, the agent.
type Shortcut struct {
	shortcuts      *ebpf.Map     // hms_shortcuts
	flip           *ebpf.Program // hms_shortcut_flip
	client, server skmsgSockkey  // the applications' own sockets
}

// flipArgs is struct flip_args of bpf/skmsg.c.
type flipArgs struct {
	_       structs.HostLayout
	Self    skmsgSockkey
	Target  skmsgSockkey
	Relayed uint64
}

// Results of hms_shortcut_flip (enum flip_result).
const (
	flipDone     = 1
	flipPending  = 2
	flipNoSelf   = 3
	flipNoTarget = 4
)

// Bits of struct shortcut's sent (SHORTCUT_EVER, SHORTCUT_BYTES).
const (
	shortcutEver  = 1 << 62
	shortcutBytes = shortcutEver - 1
)

// Shortcut returns the shortcut of a connection the agent accepted on a
// pod's 15001 (accepted, in netns clientNetns) and relays to an
// application of this node over that pod's loopback (dialled, in netns
// serverNetns), or nil when acceleration or the shortcut is off or the
// sockets are not IPv4 loopback (only those are accelerated), or one of
// the agent's own two sockets is not in hms_sockhash: its relayed bytes
// would then go through loopback TCP and could be overtaken by the ones
// sent straight to the application's receive queue.
func (d *Datapath) Shortcut(clientNetns uint64, accepted net.Conn, serverNetns uint64, dialled net.Conn) *Shortcut {
	if d.cfg.NoAccel || d.cfg.NoShortcut {
		return nil
	}
	// The application's socket sees the agent's ends the other way round.
	c, ok1 := sockKey(clientNetns, accepted.RemoteAddr(), accepted.LocalAddr())
	s, ok2 := sockKey(serverNetns, dialled.RemoteAddr(), dialled.LocalAddr())
	a1, ok3 := sockKey(clientNetns, accepted.LocalAddr(), accepted.RemoteAddr())
	a2, ok4 := sockKey(serverNetns, dialled.LocalAddr(), dialled.RemoteAddr())
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return nil
	}
	var cookie uint64
	hash := d.maps["hms_sockhash"]
	if hash.Lookup(a1, &cookie) != nil || hash.Lookup(a2, &cookie) != nil {
		return nil
	}
	return &Shortcut{shortcuts: d.maps["hms_shortcuts"], flip: d.progs["hms_shortcut_flip"], client: c, server: s}
}

// sockKey is the sockkey a socket has in the kernel's eyes (sockops,
// sk_msg): netns cookie, its own address, its peer's.
func sockKey(netns uint64, local, remote net.Addr) (skmsgSockkey, bool) {
	l, ok1 := loopback4(local)
	r, ok2 := loopback4(remote)
	if !ok1 || !ok2 {
		return skmsgSockkey{}, false
	}
	la, ra := l.Addr().As4(), r.Addr().As4()
	return skmsgSockkey{Netns: netns, LocalIp4: binary.LittleEndian.Uint32(la[:]), RemoteIp4: binary.LittleEndian.Uint32(ra[:]),
		LocalPort: uint32(l.Port()), RemotePort: uint32(r.Port())}, true
}

func loopback4(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return ap, ap.Addr().Is4() && ap.Addr().IsLoopback()
}

// Flip tries to move one direction into the kernel: client to server
// (toServer) or back, given the bytes the agent has relayed that way. on
// says the direction is in the kernel now; again whether a later try can
// succeed (false: these sockets are not accelerated, stop trying).
func (s *Shortcut) Flip(toServer bool, relayed int64) (on, again bool, err error) {
	args := flipArgs{Self: s.server, Target: s.client, Relayed: uint64(relayed)}
	if toServer {
		args.Self, args.Target = s.client, s.server
	}
	ret, err := s.flip.Run(&ebpf.RunOptions{Context: args})
	if err != nil {
		return false, false, fmt.Errorf("run hms_shortcut_flip: %w", err)
	}
	switch ret {
	case flipDone:
		return true, false, nil
	case flipPending, flipNoTarget:
		return false, true, nil
	case flipNoSelf:
		return false, false, nil
	}
	return false, false, fmt.Errorf("hms_shortcut_flip: unexpected result %d", ret)
}

// Sent returns the bytes each application sent over the connection, as
// sk_msg counted them, for each direction that was in the kernel at some
// point (clientOn, serverOn); a direction whose entry is gone (evicted,
// or never switched and closed) reports false.
func (s *Shortcut) Sent() (fromClient, fromServer uint64, clientOn, serverOn bool) {
	var c, v skmsgShortcut
	if s.shortcuts.Lookup(s.client, &c) == nil && c.Sent&shortcutEver != 0 {
		fromClient, clientOn = c.Sent&shortcutBytes, true
	}
	if s.shortcuts.Lookup(s.server, &v) == nil && v.Sent&shortcutEver != 0 {
		fromServer, serverOn = v.Sent&shortcutBytes, true
	}
	return fromClient, fromServer, clientOn, serverOn
}

// Close forgets the connection's two entries.
func (s *Shortcut) Close() error {
	m := s.shortcuts
	var errs []error
	for _, k := range []skmsgSockkey{s.client, s.server} {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
