package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hms-node/hms-node/pkg/agent/health"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/api"
)

var readFile = os.ReadFile

// maxSnapshotBytes bounds one message from the control plane.
const maxSnapshotBytes = 512 << 20

// connectControl joins the mesh (or loads the node identity of an earlier
// run) and dials the control plane over mTLS with the node certificate.
// Without a control plane the agent runs standalone: no registry, no
// identities, plain pass-through.
func (a *Agent) connectControl(ctx context.Context) error {
	if a.cfg.Control == "" {
		return nil
	}
	id, err := a.loadOrJoin(ctx)
	if err != nil {
		return err
	}
	// A snapshot of a large registry is one message (6.5 MiB for 100k
	// instances): far past gRPC's 4 MiB default.
	conn, err := grpc.NewClient(a.cfg.Control, grpc.WithTransportCredentials(credentials.NewTLS(a.controlTLS(id))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxSnapshotBytes)))
	if err != nil {
		return fmt.Errorf("control plane %s: %w", a.cfg.Control, err)
	}
	a.ident, a.control, a.idClient = id, conn, api.NewIdentityClient(conn)
	a.client = &registry.Client{
		Conn:      conn,
		Node:      &api.Node{Name: a.cfg.Node, AgentVersion: a.cfg.Version},
		Table:     a.table,
		Instances: a.instances,
		OnChange:  a.registryChanged,
		OnControl: a.onControl,
		Log:       a.log,
	}
	go a.renewNodeCert(ctx, id, a.idClient)
	return nil
}

// startRegistry runs the registry stream once the pods are up, so the
// first Hello carries them.
func (a *Agent) startRegistry(ctx context.Context) error {
	if a.client == nil {
		return nil
	}
	go func() {
		defer a.control.Close()
		a.client.Run(ctx)
	}()
	go a.sendStats(ctx)
	return nil
}

// rpcMessage turns a gRPC error into its one-line message.
func rpcMessage(err error) error {
	if s, ok := status.FromError(err); ok {
		return errors.New(s.Message())
	}
	return err
}

// instances are this node's registered endpoints: one per enrolled pod and
// declared port, healthy once its probe passed.
func (a *Agent) instances() []*api.Instance {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*api.Instance
	for _, p := range a.pods {
		out = append(out, p.instancesLocked(a.cfg.Node)...)
	}
	return out
}

func (p *pod) instancesLocked(node string) []*api.Instance {
	if !p.spec.IP.IsValid() {
		return nil // a pod without an address cannot be an endpoint
	}
	if len(p.spec.Ports) == 0 {
		// A client-only pod: a port-0 instance, never picked, so that the
		// CA's placement rule lets this node hold the pod's identity.
		return []*api.Instance{{Namespace: p.spec.Namespace, Service: p.spec.Service, Node: node,
			Ip: p.spec.IP.String(), Port: 0, Healthy: true, Workload: p.spec.Netns}}
	}
	var out []*api.Instance
	for _, port := range p.spec.Ports {
		out = append(out, p.instance(node, port))
	}
	return out
}

func (p *pod) instance(node string, port uint16) *api.Instance {
	p.mu.Lock()
	healthy := p.healthy[port]
	p.mu.Unlock()
	// In a mesh with identities an instance serves nobody until its
	// workload certificate is in: peers would be refused at the handshake.
	if p.pool != nil {
		if _, err := p.currentCert(); err != nil {
			healthy = false
		}
	}
	return &api.Instance{Namespace: p.spec.Namespace, Service: p.spec.Service, Node: node,
		Ip: p.spec.IP.String(), Port: uint32(port), Healthy: healthy, Workload: p.spec.Netns}
}

// registryChanged mirrors the table into the eBPF VIP map and the health
// checks of local instances. It runs after every snapshot and delta.
func (a *Agent) registryChanged() {
	a.syncVIPs()
	a.firstSync.Do(func() {
		a.log.Info("registry synced", "vip_ports", len(a.table.VIPs()), "revision", a.table.Revision(), "since_start", time.Since(a.started).Round(time.Millisecond))
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pods {
		check := a.checkFor(p.spec)
		if check == p.check {
			continue // SetCheck wakes the probes: only on a real change
		}
		p.check = check
		for _, m := range p.monitors {
			m.SetCheck(check)
		}
	}
}

// syncVIPs makes hms_vips equal to the table's VIP:ports, writing only the
// difference.
func (a *Agent) syncVIPs() {
	want := map[netip.AddrPort]uint32{}
	for _, v := range a.table.VIPs() {
		want[v.Addr] = v.ID
	}
	a.vipMu.Lock()
	defer a.vipMu.Unlock()
	if a.vips == nil {
		cur, err := a.dp.VIPs()
		if err != nil {
			a.log.Error("read VIP map", "error", err)
			return
		}
		a.vips = cur
	}
	for vp, id := range want {
		if old, ok := a.vips[vp]; ok && old == id {
			continue
		}
		if err := a.dp.SetVIP(vp, id); err != nil {
			a.log.Error("VIP map", "error", err)
			continue
		}
		a.vips[vp] = id
	}
	for vp := range a.vips {
		if _, ok := want[vp]; !ok {
			if err := a.dp.DeleteVIP(vp); err == nil {
				delete(a.vips, vp)
			}
		}
	}
}

// checkFor is the health check of a pod's service, from its manifest.
func (a *Agent) checkFor(spec PodSpec) health.Check {
	c := health.Check{Interval: a.cfg.ProbeInterval}
	if svc := a.table.Service(spec.Namespace, spec.Service); svc != nil && svc.Health != nil {
		c.Path = svc.Health.Path
		if svc.Health.IntervalMs > 0 {
			c.Interval = time.Duration(svc.Health.IntervalMs) * time.Millisecond
		}
	}
	return c
}

// startMonitorsLocked probes each declared port of a pod: at once, then
// every interval; a change is reported to the control plane at once.
func (a *Agent) startMonitorsLocked(p *pod) {
	ctx, cancel := context.WithCancel(context.Background())
	p.stopMonitors = cancel
	check := a.checkFor(p.spec)
	p.check = check
	for _, port := range p.spec.Ports {
		port := port
		m := &health.Monitor{
			Dialer: p.dialer, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), Check: check, Log: a.log,
			OnChange: func(healthy bool, err error) {
				p.mu.Lock()
				p.healthy[port] = healthy
				p.mu.Unlock()
				a.log.Info("health", "service", p.spec.Service, "port", port, "healthy", healthy, "error", err)
				if a.client != nil && p.spec.IP.IsValid() && !p.removed.Load() {
					a.client.Report(p.instance(a.cfg.Node, port), false)
				}
			},
		}
		p.monitors = append(p.monitors, m)
		go m.Run(ctx)
	}
}
