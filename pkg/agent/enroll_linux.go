package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	hnetns "github.com/hms-node/hms-node/pkg/agent/netns"
	"github.com/hms-node/hms-node/pkg/agent/state"
)

// EnrollRequest asks the agent to put a pod into the mesh.
type EnrollRequest struct {
	Netns     string   `json:"netns"`
	Service   string   `json:"service"`
	Namespace string   `json:"namespace,omitempty"`
	Ports     []uint16 `json:"ports,omitempty"`
}

// ErrConflict marks a request that contradicts the agent's state.
var ErrConflict = errors.New("conflict")

// Enroll validates the request, then opens the pod's listeners, blackholes
// the VIP range in it and steers it. On any failure it undoes what it did,
// so a failed enroll changes nothing.
func (a *Agent) Enroll(req EnrollRequest) (PodSpec, error) {
	if req.Service == "" {
		return PodSpec{}, errors.New("enroll: --service is required")
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	for _, p := range req.Ports {
		if p == 0 {
			return PodSpec{}, errors.New("enroll: port 0 is not a service port")
		}
	}
	st, err := os.Stat(req.Netns)
	if err != nil {
		return PodSpec{}, fmt.Errorf("enroll: network namespace %s: %w", req.Netns, err)
	}
	if st.IsDir() {
		return PodSpec{}, fmt.Errorf("enroll: %s is a directory, not a network namespace", req.Netns)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.handedOver {
		return PodSpec{}, errors.New("enroll: this agent is handing over to its successor; retry")
	}
	if d, ok := a.degraded[req.Netns]; ok {
		return PodSpec{}, fmt.Errorf("enroll: %s is enrolled as %s/%s but degraded (%s); unenroll it first: %w", req.Netns, d.spec.Namespace, d.spec.Service, d.err, ErrConflict)
	}
	if old, ok := a.pods[req.Netns]; ok {
		return PodSpec{}, fmt.Errorf("enroll: %s is already enrolled as %s/%s: %w", req.Netns, old.spec.Namespace, old.spec.Service, ErrConflict)
	}
	cookie, err := hnetns.Cookie(req.Netns)
	if err != nil {
		return PodSpec{}, fmt.Errorf("enroll: %s is not a network namespace: %w", req.Netns, err)
	}
	spec := PodSpec{Netns: req.Netns, Service: req.Service, Namespace: req.Namespace, Ports: req.Ports, Cookie: cookie}
	if spec.IP, err = podIP(req.Netns); err != nil {
		return PodSpec{}, err
	}
	p, err := a.startPodLocked(spec, nil, false)
	if err != nil {
		return PodSpec{}, err
	}
	if err := a.saveLocked(); err != nil {
		a.stopPodLocked(p)
		return PodSpec{}, err
	}
	a.log.Info("enrolled", "netns", spec.Netns, "service", spec.Service, "ports", spec.Ports, "cookie", spec.Cookie)
	return p.spec, nil
}

// startPodLocked brings a pod into service: listeners (new or inherited),
// the VIP blackhole, then the datapath. On failure it rolls back, except
// that a pod already steered (restored or inherited) stays steered: it must
// keep failing closed rather than bypass the agent.
func (a *Agent) startPodLocked(spec PodSpec, inherited *podSockets, steered bool) (*pod, error) {
	if inherited == nil {
		inherited = &podSockets{}
	}
	ln, err := openListeners(spec, inherited.tcp)
	if err != nil {
		return nil, err
	}
	udp, err := openDNS(spec, inherited.udp)
	if err != nil {
		for _, l := range ln {
			l.Close()
		}
		return nil, err
	}
	p := &pod{spec: spec, ln: ln, dns4: udp[lnDNS4], dns6: udp[lnDNS6],
		conns: map[net.Conn]struct{}{}, healthy: map[uint16]bool{},
		dialer: &hnetns.Dialer{NetnsPath: spec.Netns, Mark: a.dp.Mark(), Timeout: a.cfg.DialTimeout}}
	for _, port := range spec.HealthyPorts {
		p.healthy[port] = true
	}
	p.spec.HealthyPorts = nil
	if !spec.Blackhole {
		added, err := blackhole(spec.Netns, a.cfg.VIPRange)
		if err != nil {
			p.stop()
			return nil, err
		}
		p.spec.Blackhole = added
	}
	fail := func(err error) (*pod, error) {
		p.stop()
		if !steered {
			a.dp.UnenrollPod(p.spec.datapath())
			if p.spec.Blackhole {
				removeBlackhole(spec.Netns, a.cfg.VIPRange)
			}
		}
		return nil, err
	}
	if err := a.dp.SetInboundListener(spec.Cookie, p.ln[lnIn]); err != nil {
		return fail(err)
	}
	if err := a.dp.EnrollPod(p.spec.datapath()); err != nil {
		return fail(fmt.Errorf("enroll %s: %w", spec.Netns, err))
	}
	a.pods[spec.Netns] = p
	for _, port := range spec.Ports {
		if spec.IP.IsValid() {
			a.byAddr[netip.AddrPortFrom(spec.IP, port)] = p
		}
	}
	if a.ident != nil {
		p.pool = a.newPool(p)
		ctx, cancel := context.WithCancel(context.Background())
		p.stopID = func() { cancel(); p.pool.Close() }
		a.startWorkloadIdentity(ctx, p)
	}
	a.serve(p)
	a.startMonitorsLocked(p)
	if a.client != nil && len(spec.Ports) == 0 {
		for _, in := range p.instancesLocked(a.cfg.Node) {
			a.client.Report(in, false) // client-only: no probe will report it
		}
	}
	return p, nil
}

// podSockets are a pod's sockets handed over by a predecessor, by name.
type podSockets struct {
	tcp map[string]*net.TCPListener
	udp map[string]*net.UDPConn
}

func (a *Agent) stopPodLocked(p *pod) error {
	p.removed.Store(true) // before the removal report: no probe may re-register it
	if a.client != nil {
		for _, in := range p.instancesLocked(a.cfg.Node) {
			a.client.Report(in, true)
		}
	}
	delete(a.pods, p.spec.Netns)
	for _, port := range p.spec.Ports {
		delete(a.byAddr, netip.AddrPortFrom(p.spec.IP, port))
	}
	if p.dev {
		p.stop()
		go func() { p.active.Wait(); p.release() }()
		return a.dp.UnenrollCgroup(p.cgroupID)
	}
	err := a.dp.UnenrollPod(p.spec.datapath())
	p.stop()
	// Its connections finish on their own; what they use goes after them.
	go func() {
		p.active.Wait()
		p.release()
		p.dialer.Close()
	}()
	if p.spec.Blackhole {
		if rerr := removeBlackhole(p.spec.Netns, a.cfg.VIPRange); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			a.log.Warn("remove VIP blackhole", "netns", p.spec.Netns, "error", rerr)
		}
	}
	return err
}

// Unenroll takes a pod out of the mesh: its connects go direct again.
// Connections the agent carries for it finish on their own.
func (a *Agent) Unenroll(netnsPath string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.handedOver {
		return errors.New("unenroll: this agent is handing over to its successor; retry")
	}
	if d, ok := a.degraded[netnsPath]; ok {
		delete(a.degraded, netnsPath)
		a.dp.UnenrollPod(d.spec.datapath())
		if d.spec.Blackhole {
			removeBlackhole(d.spec.Netns, a.cfg.VIPRange)
		}
		return a.saveLocked()
	}
	p, ok := a.pods[netnsPath]
	if !ok {
		return fmt.Errorf("unenroll: %s is not enrolled: %w", netnsPath, ErrConflict)
	}
	err := a.stopPodLocked(p)
	if serr := a.saveLocked(); serr != nil {
		err = errors.Join(err, serr)
	}
	a.log.Info("unenrolled", "netns", netnsPath)
	return err
}

// podIP returns the pod's first global IPv4 address, if it has one.
func podIP(nsPath string) (netip.Addr, error) {
	h, closeH, err := handleAt(nsPath)
	if err != nil {
		return netip.Addr{}, err
	}
	defer closeH()
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses in %s: %w", nsPath, err)
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP.To4()); ok && !ip.IsLoopback() {
			return ip, nil
		}
	}
	return netip.Addr{}, nil
}

func handleAt(nsPath string) (*netlink.Handle, func(), error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	return h, func() { h.Close(); ns.Close() }, nil
}

// blackhole adds a blackhole route for the VIP range in the pod unless an
// identical one is there; it reports whether it added one.
func blackhole(nsPath string, vips netip.Prefix) (bool, error) {
	h, closeH, err := handleAt(nsPath)
	if err != nil {
		return false, err
	}
	defer closeH()
	dst := &net.IPNet{IP: vips.Addr().AsSlice(), Mask: net.CIDRMask(vips.Bits(), vips.Addr().BitLen())}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst, Table: 254}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		return false, fmt.Errorf("list routes in %s: %w", nsPath, err)
	}
	for _, r := range routes {
		if r.Type == 6 { // RTN_BLACKHOLE
			return false, nil
		}
	}
	if len(routes) > 0 {
		return false, fmt.Errorf("%s has a route for the VIP range %s that is not a blackhole; refusing to replace it", nsPath, vips)
	}
	if err := h.RouteAdd(&netlink.Route{Dst: dst, Type: 6, Table: 254}); err != nil {
		return false, fmt.Errorf("blackhole %s in %s: %w", vips, nsPath, err)
	}
	return true, nil
}

func removeBlackhole(nsPath string, vips netip.Prefix) error {
	h, closeH, err := handleAt(nsPath)
	if err != nil {
		return err
	}
	defer closeH()
	dst := &net.IPNet{IP: vips.Addr().AsSlice(), Mask: net.CIDRMask(vips.Bits(), vips.Addr().BitLen())}
	return h.RouteDel(&netlink.Route{Dst: dst, Type: 6, Table: 254})
}

// saveLocked persists the enrollments.
func (a *Agent) saveLocked() error {
	specs := make([]PodSpec, 0, len(a.pods)+len(a.degraded))
	for _, p := range a.pods {
		if !p.dev { // dev workloads end with their process
			specs = append(specs, p.spec)
		}
	}
	for _, d := range a.degraded {
		specs = append(specs, d.spec)
	}
	if err := state.Save(a.cfg.StateDir, persisted{Version: 1, Pods: specs}); err != nil {
		return fmt.Errorf("persist enrollments in %s: %w", a.cfg.StateDir, err)
	}
	return nil
}

// degradedPod is a persisted pod the agent could not serve; it stays
// steered (failing closed) and is shown in status.
type degradedPod struct {
	spec PodSpec
	err  string
}

// persisted is the agent's state file, and the state a successor receives.
type persisted struct {
	Version int       `json:"version"`
	Pods    []PodSpec `json:"pods"`
}

// restore re-creates the pods of the persisted state after a crash or a
// restart: the pinned programs kept them failing closed meanwhile. A pod
// whose netns is gone (or was replaced: another cookie) is dropped.
func (a *Agent) restore() error {
	var st persisted
	found, err := state.Load(a.cfg.StateDir, &st)
	if err != nil {
		return err
	}
	if !found {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.log.Info("restoring enrolled pods", "pods", len(st.Pods), "state", a.cfg.StateDir)
	for _, spec := range st.Pods {
		cookie, err := hnetns.Cookie(spec.Netns)
		if err != nil || cookie != spec.Cookie {
			a.log.Info("enrolled pod is gone; dropping it", "netns", spec.Netns)
			a.dp.UnenrollPod(spec.datapath())
			continue
		}
		if _, err := a.startPodLocked(spec, nil, true); err != nil {
			a.log.Error("restore pod; it stays failing closed", "netns", spec.Netns, "error", err)
			a.degraded[spec.Netns] = degradedPod{spec, err.Error()}
		}
	}
	return a.saveLocked()
}
