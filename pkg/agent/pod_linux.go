package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hms-node/hms-node/pkg/agent/hbone"
	"github.com/hms-node/hms-node/pkg/agent/health"
	"github.com/hms-node/hms-node/pkg/agent/l4"
	"github.com/hms-node/hms-node/pkg/agent/l7"
	"github.com/hms-node/hms-node/pkg/agent/metrics"
	"github.com/hms-node/hms-node/pkg/agent/netns"
	"github.com/hms-node/hms-node/pkg/datapath"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// PodSpec is an enrollment as persisted and as handed to a successor.
type PodSpec struct {
	Netns     string     `json:"netns"`
	Service   string     `json:"service"`
	Namespace string     `json:"namespace"`
	Ports     []uint16   `json:"ports,omitempty"`
	IP        netip.Addr `json:"ip"`
	Cookie    uint64     `json:"cookie"`
	// Blackhole is true when the agent added the VIP-range blackhole in
	// the pod (and so may remove it).
	Blackhole bool `json:"blackhole,omitempty"`
	// HealthyPorts carries the probe results to a successor, so an
	// upgrade does not mark serving instances unhealthy mesh-wide.
	HealthyPorts []uint16 `json:"healthy_ports,omitempty"`
}

func (s PodSpec) datapath() datapath.Pod {
	return datapath.Pod{Netns: s.Netns, Cookie: s.Cookie, IP: s.IP, Ports: s.Ports}
}

// Listener names inside one pod, also the names sent in a hand-over.
const (
	lnOut4 = "out4" // 127.0.0.1:15001
	lnOut6 = "out6" // [::1]:15001
	lnIn   = "in"   // [::]:15006, dual-stack: sk_lookup assigns v4 and v6
	// lnHBONE ([::]:15008) is in hbone_linux.go.
)

var listenAddrs = map[string]string{
	lnOut4:  "127.0.0.1:" + strconv.Itoa(datapath.OutboundPort),
	lnOut6:  "[::1]:" + strconv.Itoa(datapath.OutboundPort),
	lnIn:    "[::]:" + strconv.Itoa(datapath.InboundPort),
	lnHBONE: "[::]:" + strconv.Itoa(hbone.Port),
}

// pod is an enrolled pod served by this agent.
type pod struct {
	spec   PodSpec
	dialer *netns.Dialer
	ln     map[string]*net.TCPListener

	dns4, dns6 *net.UDPConn // 127.0.0.1:15053, [::1]:15053

	pool     *hbone.Pool                  // tunnels to other nodes (mesh mode)
	hboneSrv *hbone.Server                // the pod's 15008
	identity atomic.Pointer[mtls.Rotator] // the pod's workload certificate
	stopID   func()

	dev      bool   // a host process group (hms-node dev), not a netns
	cgroupID uint64 // dev only

	monitors     []*health.Monitor
	stopMonitors func()

	active  sync.WaitGroup // connections and tunnels being served
	removed atomic.Bool    // unenrolled: report nothing more
	check   health.Check   // the probes' current check

	mu        sync.Mutex // guards the fields below
	conns     map[net.Conn]struct{}
	healthy   map[uint16]bool // by declared port
	http      *http.Transport // HTTP to other nodes' endpoints, made on first use
	httpFast  *l7.Transport   // in front of http: bodiless requests in the caller's goroutine
	httpLocal *l7.Local       // the called side's view of this pod, made on first use
}

// openListeners creates the pod's listeners inside its netns, or adopts
// those a predecessor handed over.
func openListeners(spec PodSpec, inherited map[string]*net.TCPListener) (map[string]*net.TCPListener, error) {
	out := map[string]*net.TCPListener{}
	for name, addr := range listenAddrs {
		if l, ok := inherited[name]; ok {
			out[name] = l
			continue
		}
		l, err := netns.Listen(spec.Netns, addr)
		if err != nil && name == lnOut6 && noIPv6(err) {
			continue // a pod without IPv6 loopback: nothing can dial [::1] there anyway
		}
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, errorf("listen on %s in %s: %w", addr, spec.Netns, err)
		}
		out[name] = l
	}
	return out, nil
}

// Names of the pod's DNS sockets in a hand-over.
const (
	lnDNS4 = "dns4"
	lnDNS6 = "dns6"
)

var dnsAddrs = map[string]string{
	lnDNS4: "127.0.0.1:" + strconv.Itoa(datapath.DNSPort),
	lnDNS6: "[::1]:" + strconv.Itoa(datapath.DNSPort),
}

// openDNS creates (or adopts) the pod's DNS sockets.
func openDNS(spec PodSpec, inherited map[string]*net.UDPConn) (map[string]*net.UDPConn, error) {
	out := map[string]*net.UDPConn{}
	for name, addr := range dnsAddrs {
		if c, ok := inherited[name]; ok {
			out[name] = c
			continue
		}
		c, err := netns.ListenUDP(spec.Netns, addr)
		if err != nil && name == lnDNS6 && noIPv6(err) {
			continue
		}
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, errorf("DNS socket %s in %s: %w", addr, spec.Netns, err)
		}
		out[name] = c
	}
	return out, nil
}

// noIPv6 tells a bind that failed for want of IPv6 in the pod's netns.
func noIPv6(err error) bool {
	return errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EAFNOSUPPORT)
}

// serve accepts on every listener of the pod until they close.
func (a *Agent) serve(p *pod) {
	go a.dns.ServePacket(p.dns4)
	if p.dns6 != nil {
		go a.dns.ServePacket(p.dns6)
	}
	go a.acceptLoop(p, p.ln[lnOut4], a.serveOutbound)
	if l, ok := p.ln[lnOut6]; ok {
		go a.acceptLoop(p, l, a.serveOutbound)
	}
	go a.acceptLoop(p, p.ln[lnIn], a.serveInbound)
	if a.ident != nil {
		a.startHBONEServer(p)
	} else {
		go a.refuseLoop(p.ln[lnHBONE]) // standalone: no identity to serve mTLS with
	}
}

// refuseLoop accepts and closes, so a peer is refused at once.
func (a *Agent) refuseLoop(l *net.TCPListener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func (a *Agent) acceptLoop(p *pod, l *net.TCPListener, handle func(*pod, *net.TCPConn)) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Warn("accept", "netns", p.spec.Netns, "error", err)
			}
			return
		}
		a.conns.Add(1)
		p.active.Add(1)
		p.track(c, true)
		go func() {
			defer a.conns.Done()
			defer p.active.Done()
			defer p.track(c, false)
			defer c.Close()
			l4.Guard(a.log, "connection from "+c.RemoteAddr().String(), func() { handle(p, c) })
		}()
	}
}

// serveOutbound relays a connection the pod's application made to the
// destination it dialled (for now plain L4 from inside the pod's netns).
func (a *Agent) serveOutbound(p *pod, c *net.TCPConn) {
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst, err := a.dp.OrigDst(p.spec.Cookie, netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	if err != nil {
		a.log.Warn("no original destination; resetting", "netns", p.spec.Netns, "error", err)
		c.SetLinger(0)
		return
	}
	if a.cfg.VIPRange.Contains(dst.Addr()) {
		a.serveService(p, c, dst)
		return
	}
	// A mesh pod's IP:port is a call to that instance: in-process on this
	// node, in a tunnel to another (dialEndpoint); anything else passes
	// through, dialled from inside the pod, and is left out of the TCP
	// metrics: its destinations are any address, not a bounded set.
	var up net.Conn
	var local *pod
	var labels []metrics.TCPLabels
	if ns, svc, ok := a.meshInstance(dst); ok {
		up, local, err = a.dialEndpoint(p, dst, ns, svc, c)
		labels = a.tcpLabels(p, ns, svc, local)
	} else {
		up, err = p.dialer.DialContext(context.Background(), "tcp", dst.String())
	}
	if err != nil {
		a.log.Info("upstream dial failed", "dst", dst, "error", err)
		c.SetLinger(0) // the application sees a reset, as it would have
		return
	}
	defer up.Close()
	a.pipeLocal(p, local, c, up, labels...)
}

// serveInbound delivers a connection sk_lookup steered to 15006 to the
// application over the pod's loopback, at the port the client dialled. In
// a mesh with identities, plaintext is refused unless the service is
// permissive (STRICT by default).
func (a *Agent) serveInbound(p *pod, c *net.TCPConn) {
	port := c.LocalAddr().(*net.TCPAddr).Port
	if !hasPort(p.spec.Ports, uint16(port)) {
		// Only sk_lookup's steered ports belong here; a pod dialling its
		// own 15006 would otherwise make the agent dial itself forever.
		c.SetLinger(0)
		return
	}
	if a.ident != nil && !a.permissive(p.spec) {
		a.plaintextRefused.Add(1)
		a.log.Info("plaintext refused (mtls: required)", "service", p.spec.Namespace+"/"+p.spec.Service, "from", c.RemoteAddr())
		c.SetLinger(0)
		return
	}
	up, err := p.dialer.DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		a.log.Info("application not answering", "netns", p.spec.Netns, "port", port, "error", err)
		c.SetLinger(0)
		return
	}
	defer up.Close()
	// Plaintext tells nothing of the caller (Istio's "unknown"), and no
	// certificate was presented for the destination either.
	a.pipeTCP(c, up, metrics.TCPLabels{Reporter: "destination",
		DestinationService: p.spec.Namespace + "/" + p.spec.Service, SecurityPolicy: "none"})
}

// meshInstance names the service of the mesh instance at dst: a pod of
// this node, or one the registry knows on another node.
func (a *Agent) meshInstance(dst netip.AddrPort) (ns, svc string, ok bool) {
	if local := a.localPod(dst); local != nil {
		return local.spec.Namespace, local.spec.Service, true
	}
	if in, ok := a.table.InstanceAt(dst); ok {
		return in.Namespace, in.Service, true
	}
	return "", "", false
}

// localPod returns the enrolled pod of this node that serves dst, if any.
func (a *Agent) localPod(dst netip.AddrPort) *pod {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byAddr[dst]
}

func (p *pod) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

// stop closes this agent's listeners and probes; established connections
// go on.
func (p *pod) stop() {
	for _, l := range p.ln {
		l.Close()
	}
	for _, c := range []*net.UDPConn{p.dns4, p.dns6} {
		if c != nil {
			c.Close()
		}
	}
	if p.stopMonitors != nil {
		p.stopMonitors()
	}
	if p.hboneSrv != nil {
		p.hboneSrv.Close() // tunnels already open finish
	}
}

// release ends what outlives the listeners: the identity's rotation and
// the tunnel pool. It runs once the pod's connections are done.
func (p *pod) release() {
	p.closeHTTP()
	if p.stopID != nil {
		p.stopID()
	}
}

func (p *pod) closeConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}
