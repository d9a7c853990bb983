package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	hnetns "github.com/hms-node/hms-node/pkg/agent/netns"
)

// DevRequest asks the agent to run a host process group as a workload
// (`hms-node dev`): enrolled by cgroup, registered and probed like a pod.
type DevRequest struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace,omitempty"`
	Port      uint16 `json:"port"`
}

// DevWorkload is what the CLI needs to start the process in the workload.
type DevWorkload struct {
	ID     string `json:"id"`
	Cgroup string `json:"cgroup"` // start the process in this cgroup v2 directory
}

var devSeq atomic.Uint64

// EnrollDev creates a cgroup under the steered root for a host process,
// listeners for its outbound connections and DNS on the host's loopback,
// and registers it as an instance at HostIP:port. The workload goes away
// when its cgroup empties (the process exited, even if the CLI was killed).
func (a *Agent) EnrollDev(req DevRequest) (DevWorkload, error) {
	if req.Service == "" || req.Port == 0 {
		return DevWorkload{}, errors.New("dev: --service and --port are required")
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	id := fmt.Sprintf("hms-dev-%d-%d", os.Getpid(), devSeq.Add(1))
	dir := filepath.Join(a.dp.CgroupRoot(), id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return DevWorkload{}, fmt.Errorf("dev: create cgroup: %w", err)
	}
	p, err := a.startDev(req, id, dir)
	if err != nil {
		os.Remove(dir)
		return DevWorkload{}, err
	}
	go a.watchDev(p, dir)
	a.log.Info("dev workload", "id", id, "service", req.Service, "port", req.Port)
	return DevWorkload{ID: id, Cgroup: dir}, nil
}

func (a *Agent) startDev(req DevRequest, id, dir string) (*pod, error) {
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dev: outbound listener: %w", err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("dev: DNS socket: %w", err)
	}
	cookie, err := hnetns.Cookie("/proc/self/ns/net")
	if err != nil {
		l.Close()
		udp.Close()
		return nil, err
	}
	spec := PodSpec{Netns: "dev:" + dir, Service: req.Service, Namespace: req.Namespace,
		Ports: []uint16{req.Port}, IP: a.cfg.HostIP, Cookie: cookie}
	p := &pod{spec: spec, ln: map[string]*net.TCPListener{lnOut4: l.(*net.TCPListener)}, dns4: udp,
		conns: map[net.Conn]struct{}{}, healthy: map[uint16]bool{}, dev: true,
		dialer: &hnetns.Dialer{Mark: a.dp.Mark(), Timeout: a.cfg.DialTimeout}}
	cgid, err := a.dp.EnrollCgroup(dir, uint16(l.Addr().(*net.TCPAddr).Port), uint16(udp.LocalAddr().(*net.UDPAddr).Port))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.cgroupID = cgid
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.handedOver {
		p.stop()
		a.dp.UnenrollCgroup(cgid)
		return nil, errors.New("dev: the agent is shutting down")
	}
	if other := a.byAddr[netip.AddrPortFrom(spec.IP, req.Port)]; other != nil {
		p.stop()
		a.dp.UnenrollCgroup(cgid)
		return nil, fmt.Errorf("dev: %s:%d is already served by %s/%s: %w", spec.IP, req.Port, other.spec.Namespace, other.spec.Service, ErrConflict)
	}
	if a.ident != nil { // calls to other nodes need its identity, as a pod's do
		p.pool = a.newPool(p)
		ctx, cancel := context.WithCancel(context.Background())
		p.stopID = func() { cancel(); p.pool.Close() }
		a.startWorkloadIdentity(ctx, p)
	}
	a.pods[spec.Netns] = p
	a.byAddr[netip.AddrPortFrom(spec.IP, req.Port)] = p
	go a.dns.ServePacket(udp)
	go a.acceptLoop(p, p.ln[lnOut4], a.serveOutbound)
	a.startMonitorsLocked(p)
	return p, nil
}

// watchDev removes a dev workload once its cgroup has no process left.
func (a *Agent) watchDev(p *pod, dir string) {
	for range time.Tick(500 * time.Millisecond) {
		ev, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err == nil && !bytes.Contains(ev, []byte("populated 0")) {
			continue
		}
		a.mu.Lock()
		if a.pods[p.spec.Netns] == p {
			a.stopPodLocked(p)
		}
		a.mu.Unlock()
		os.Remove(dir)
		a.log.Info("dev workload ended", "service", p.spec.Service, "cgroup", dir)
		return
	}
}

// HostIPDefault is where dev workloads are registered when no --host-ip is
// given: reachable from this node only.
var hostIPDefault = netip.MustParseAddr("127.0.0.1")

// RemoveDev ends a dev workload at once (the CLI calls it when its process
// exits; the cgroup watch is the backstop).
func (a *Agent) RemoveDev(id string) error {
	key := "dev:" + filepath.Join(a.dp.CgroupRoot(), id)
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pods[key]
	if !ok {
		return fmt.Errorf("dev workload %s: not found: %w", id, ErrConflict)
	}
	return a.stopPodLocked(p)
}
