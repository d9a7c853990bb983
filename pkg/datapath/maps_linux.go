package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Ports the agent listens on inside every enrolled pod.
const (
	OutboundPort = 15001
	InboundPort  = 15006
	DNSPort      = 15053
)

// Pod is what the datapath needs to know of an enrolled pod.
type Pod struct {
	Netns  string     // path of the pod's netns
	Cookie uint64     // its netns cookie
	IP     netip.Addr // its own IPv4, exempt from inbound steering
	Ports  []uint16   // service ports steered to 15006
}

// EnrollPod makes the programs act on the pod: its connects go to the agent
// and sk_lookup in its netns steers its service ports. Idempotent, so a
// restarted agent re-applies its persisted pods.
func (d *Datapath) EnrollPod(p Pod) error {
	e := connectEnrollment{OutboundPort: OutboundPort, DnsPort: DNSPort}
	for _, port := range p.Ports {
		k := connectPortkey{Netns: p.Cookie, Port: uint32(port)}
		if err := d.maps["hms_inbound_ports"].Put(k, uint32(0)); err != nil {
			return fmt.Errorf("enroll port %d: %w", port, err)
		}
	}
	if p.IP.Is4() {
		ip := p.IP.As4()
		if err := d.maps["hms_pod_ips"].Put(p.Cookie, binary.LittleEndian.Uint32(ip[:])); err != nil {
			return fmt.Errorf("enroll pod ip: %w", err)
		}
	}
	if err := d.attachNetns(p); err != nil {
		return err
	}
	// Last: from here on the pod's connects are rewritten.
	if err := d.maps["hms_pods"].Put(p.Cookie, e); err != nil {
		return fmt.Errorf("enroll netns: %w", err)
	}
	return nil
}

func netnsPin(cookie uint64) string { return fmt.Sprintf("link_sklookup_%d", cookie) }

// attachNetns loads the pod's copy of sk_lookup and attaches it to the
// pod's netns, updating a pinned link in place after a restart.
func (d *Datapath) attachNetns(p Pod) error {
	if _, ok := d.podProgs[p.Cookie]; ok {
		return nil // already attached by this agent
	}
	progs, err := d.loadObject("sklookup", d.sklookup, map[string]any{"pod_netns": p.Cookie})
	if err != nil {
		return err
	}
	prog := progs["hms_sklookup"]
	pin := netnsPin(p.Cookie)
	path := filepath.Join(d.cfg.BPFFS, pin)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		if err := l.Update(prog); err == nil {
			d.links[pin] = l
			d.podProgs[p.Cookie] = prog
			return nil
		}
		l.Unpin()
		l.Close()
	}
	ns, err := os.Open(p.Netns)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", p.Netns, err)
	}
	defer ns.Close()
	l, err := link.AttachNetNs(int(ns.Fd()), prog)
	if err != nil {
		prog.Close()
		return fmt.Errorf("attach sk_lookup to %s: %w", p.Netns, err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		prog.Close()
		return fmt.Errorf("pin %s: %w", pin, err)
	}
	d.links[pin] = l
	d.podProgs[p.Cookie] = prog
	return nil
}

// SetInboundListener registers the pod's 15006 listener for sk_lookup.
func (d *Datapath) SetInboundListener(cookie uint64, l syscall.Conn) error {
	raw, err := l.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = raw.Control(func(fd uintptr) {
		perr = d.maps["hms_listeners"].Update(cookie, uint64(fd), ebpf.UpdateAny)
	})
	if err != nil {
		return err
	}
	if perr != nil {
		return fmt.Errorf("register inbound listener: %w", perr)
	}
	return nil
}

// UnenrollPod undoes EnrollPod; entries already gone are fine.
func (d *Datapath) UnenrollPod(p Pod) error {
	var errs []error
	del := func(m string, k any) {
		if err := d.maps[m].Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
		}
	}
	del("hms_pods", p.Cookie)
	for _, port := range p.Ports {
		del("hms_inbound_ports", connectPortkey{Netns: p.Cookie, Port: uint32(port)})
	}
	del("hms_pod_ips", p.Cookie)
	del("hms_listeners", p.Cookie)
	pin := netnsPin(p.Cookie)
	if prog, ok := d.podProgs[p.Cookie]; ok {
		prog.Close()
		delete(d.podProgs, p.Cookie)
	}
	if l, ok := d.links[pin]; ok {
		l.Unpin()
		l.Close()
		delete(d.links, pin)
	} else if l, err := link.LoadPinnedLink(filepath.Join(d.cfg.BPFFS, pin), nil); err == nil {
		l.Unpin()
		l.Close()
	}
	return errors.Join(errs...)
}

// EnrollCgroup steers the processes of a host cgroup (dev mode) to
// listeners on the host's loopback at the given ports. It returns the
// cgroup id.
func (d *Datapath) EnrollCgroup(dir string, outbound, dns uint16) (uint64, error) {
	id, err := CgroupID(dir)
	if err != nil {
		return 0, err
	}
	e := connectEnrollment{OutboundPort: outbound, DnsPort: dns}
	if err := d.maps["hms_cgroups"].Put(id, e); err != nil {
		return 0, fmt.Errorf("enroll cgroup: %w", err)
	}
	return id, nil
}

// UnenrollCgroup undoes EnrollCgroup.
func (d *Datapath) UnenrollCgroup(id uint64) error {
	if err := d.maps["hms_cgroups"].Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// OrigDst returns where the client at addr in the pod's netns meant to
// connect, and forgets it: each connection is looked up once.
func (d *Datapath) OrigDst(netns uint64, client netip.AddrPort) (netip.AddrPort, error) {
	k := connectClientkey{Netns: netns, Ip6: words(client.Addr().As16()), Port: client.Port()}
	var o connectOrigdst
	m := d.maps["hms_origdst"]
	if err := m.Lookup(k, &o); err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination of %s: %w", client, err)
	}
	m.Delete(k)
	return netip.AddrPortFrom(netip.AddrFrom16(bytes16(o.Ip6)).Unmap(), o.Port), nil
}

// words converts 16 address bytes to the u32 words the kernel keeps in
// memory (network byte order inside, host order words on this bpfel build).
func words(b [16]byte) [4]uint32 {
	var w [4]uint32
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return w
}

func bytes16(w [4]uint32) [16]byte {
	var b [16]byte
	for i := range w {
		binary.LittleEndian.PutUint32(b[i*4:], w[i])
	}
	return b
}

// Counters sums the per-CPU decision counters by name.
func (d *Datapath) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(CounterNames))
	per := make([]uint64, runtime.NumCPU())
	for i, name := range CounterNames {
		if err := d.maps["hms_counters"].Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

// Attachment describes one attached program.
type Attachment struct {
	Program string `json:"program"`
	Pin     string `json:"pin"`
}

// Attachments lists the links this datapath holds, sorted by pin.
func (d *Datapath) Attachments() []Attachment {
	var out []Attachment
	for pin, l := range d.links {
		name := ""
		if info, err := l.Info(); err == nil {
			if p, err := ebpf.NewProgramFromID(info.Program); err == nil {
				if pi, err := p.Info(); err == nil {
					name = pi.Name
				}
				p.Close()
			}
		}
		out = append(out, Attachment{Program: name, Pin: filepath.Join(d.cfg.BPFFS, pin)})
	}
	out = append(out, Attachment{Program: "hms_skmsg", Pin: filepath.Join(d.cfg.BPFFS, "hms_sockhash")})
	sort.Slice(out, func(i, j int) bool { return out[i].Pin < out[j].Pin })
	return out
}
