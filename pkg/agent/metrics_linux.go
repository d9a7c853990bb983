package agent

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/l4"
	"github.com/hms-node/hms-node/pkg/agent/metrics"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/datapath"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// newMetrics makes the agent's metrics and lets every scrape read the
// agent's state: datapath counters, registry sync, certificates,
// workloads and their connections, tunnels.
func (a *Agent) newMetrics() *metrics.Metrics {
	m := metrics.New(a.cfg.Node)
	err := m.Watch(metrics.State{
		Version:      a.cfg.Version,
		Datapath:     a.dp.Counters,
		Registry:     a.registryMetrics,
		Certificates: a.certificates,
		Workloads:    a.workloadMetrics,
		Tunnels: func() (uint64, uint64) {
			return a.accepted.Load(), a.plaintextRefused.Load()
		},
	})
	if err != nil { // only a programming error: the descriptors clash
		a.log.Error("agent metrics", "error", err)
	}
	return m
}

// registryMetrics reads the registry client, which Run sets before the
// metrics endpoint starts serving.
func (a *Agent) registryMetrics() (metrics.RegistryState, bool) {
	if a.client == nil {
		return metrics.RegistryState{}, false
	}
	cs := a.client.State()
	lag := metrics.Histogram{Bounds: registry.LagBuckets[:], Counts: cs.Lag.Counts[:], Sum: cs.Lag.Sum.Seconds()}
	return metrics.RegistryState{Connected: cs.Connected, LastSync: cs.LastSync, Revision: cs.Revision,
		Services: a.table.Len(), Lag: lag}, true
}

// certificates are the node's certificate and each workload identity's;
// pods of one service share an identity, reported by its earliest expiry.
func (a *Agent) certificates() []metrics.Certificate {
	var out []metrics.Certificate
	if a.ident != nil {
		if c := a.ident.cert.Load(); c != nil && c.Leaf != nil {
			out = append(out, metrics.Certificate{Identity: mtls.NodeID(a.ident.trustDomain, a.cfg.Node), NotAfter: c.Leaf.NotAfter})
		}
	}
	seen := map[string]int{}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pods {
		id, leaf := p.certInfo()
		if leaf == nil {
			continue
		}
		if i, ok := seen[id]; ok {
			if leaf.NotAfter.Before(out[i].NotAfter) {
				out[i].NotAfter = leaf.NotAfter
			}
			continue
		}
		seen[id] = len(out)
		out = append(out, metrics.Certificate{Identity: id, NotAfter: leaf.NotAfter})
	}
	return out
}

// workloadMetrics counts the enrolled workloads and their open proxied
// connections per service.
func (a *Agent) workloadMetrics() map[string]metrics.WorkloadState {
	out := map[string]metrics.WorkloadState{}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pods {
		k := p.spec.Namespace + "/" + p.spec.Service
		w := out[k]
		w.Serving++
		p.mu.Lock()
		w.Connections += len(p.conns)
		p.mu.Unlock()
		out[k] = w
	}
	for _, d := range a.degraded {
		k := d.spec.Namespace + "/" + d.spec.Service
		w := out[k]
		w.Degraded++
		out[k] = w
	}
	return out
}

// pipeTCP relays a proxied connection at L4 and reports it under each of
// labels (none for passthrough): opened now, its bytes every 15 s while
// it lasts and at the end, closed once both directions are done. client
// is the downstream side: bytes to it are "sent", bytes from it
// "received", as Istio counts them. The counts are the copy loop's own.
func (a *Agent) pipeTCP(client, up net.Conn, labels ...metrics.TCPLabels) {
	a.pipeTCPShortcut(client, up, nil, labels...)
}

// pipeLocal is pipeTCP for a connection from pod p to local, a pod of
// this node reached in-process (nil: another node): it is offered to the
// datapath's same-node shortcut, which moves each direction into the
// kernel once the relay has caught up with it.
func (a *Agent) pipeLocal(p, local *pod, client, up net.Conn, labels ...metrics.TCPLabels) {
	var sc *datapath.Shortcut
	if local != nil && !p.dev && !local.dev {
		sc = a.dp.Shortcut(p.spec.Cookie, client, local.spec.Cookie, up)
	}
	a.pipeTCPShortcut(client, up, sc, labels...)
}

// pipeTCPShortcut is pipeTCP with an optional shortcut. Bytes that went
// through the kernel are known from the kernel's count of what each
// application sent, read every shortcutPoll while the connection lasts
// and once at its end, so reports lag by up to that much.
func (a *Agent) pipeTCPShortcut(client, up net.Conn, sc *datapath.Shortcut, labels ...metrics.TCPLabels) {
	n := new(l4.Counts)
	conns := make([]*metrics.TCPConn, len(labels))
	for i, l := range labels {
		conns[i] = a.metrics.OpenTCP(l, &n.BToA, &n.AToB)
	}
	if sc == nil {
		l4.PipeCounts(client, up, n)
	} else {
		stop := make(chan struct{})
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			t := time.NewTicker(shortcutPoll)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					raiseToKernelCounts(sc, n)
				}
			}
		}()
		l4.PipeShortcut(client, up, n, sc)
		close(stop)
		<-polled
		raiseToKernelCounts(sc, n)
		if err := sc.Close(); err != nil {
			a.log.Debug("forget shortcut", "error", err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

// shortcutPoll is how often a shortcut connection's kernel counts are read.
const shortcutPoll = 5 * time.Second

// raiseToKernelCounts raises n to the kernel's count of each direction that
// is in the kernel: that count covers everything the application sent,
// relayed or not.
func raiseToKernelCounts(sc *datapath.Shortcut, n *l4.Counts) {
	fromClient, fromServer, clientOn, serverOn := sc.Sent()
	if clientOn {
		raise(&n.AToB, int64(fromClient))
	}
	if serverOn {
		raise(&n.BToA, int64(fromServer))
	}
}

// raise sets v to x unless v is already larger.
func raise(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

// tcpLabels are the source reporter's labels of pod p's connection to
// service ns/svc, with the HTTP path's security and principals (sourceOf,
// destinationOf). When local, a pod of this node, serves it in-process,
// no other agent sees the connection: the destination reporter's labels
// come too, as the HTTP path reports both sides of a same-node call.
func (a *Agent) tcpLabels(p *pod, ns, svc string, local *pod) []metrics.TCPLabels {
	src := a.sourceOf(p)
	l := metrics.TCPLabels{Reporter: "source", SourceWorkload: src.Workload, SourcePrincipal: src.Principal,
		DestinationService: ns + "/" + svc, SecurityPolicy: src.Security}
	if a.ident != nil {
		l.DestinationPrincipal = mtls.WorkloadID(a.ident.trustDomain, ns, svc)
	}
	if local == nil {
		return []metrics.TCPLabels{l}
	}
	d := l
	d.Reporter = "destination"
	return []metrics.TCPLabels{l, d}
}
