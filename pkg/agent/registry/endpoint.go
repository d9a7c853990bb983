package registry

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// endpoint is one instance plus its load-balancing state. The state is
// atomic so that Pick and done run under the read lock only.
type endpoint struct {
	// Pick reads the fields up to node: they come first so that a cold
	// endpoint costs as few cache misses as possible.
	ejectUntil atomic.Int64   // clock value; 0 = not ejected
	active     atomic.Int64   // outstanding connections
	ewma       atomic.Int64   // latency, ns; 0 = not measured yet
	sampled    atomic.Int64   // clock value of the last latency sample
	addr       netip.AddrPort // invalid when the instance's ip/port are
	node       string
	strikes    atomic.Int32 // consecutive server errors
	ejections  atomic.Int32 // consecutive ejections, for the backoff
	idx        int32        // position in b.eps
	hidx       int32        // position in b.healthy, -1 when not there

	key  string
	inst *api.Instance
	b    *bucket
	gen  uint64

	// done is built once so that Pick hands it out without allocating.
	done func(err error, latency time.Duration)
}

// putInstanceLocked stores in under key; an empty key (snapshots carry
// none) is derived from the instance.
func (t *Table) putInstanceLocked(key string, in *api.Instance) {
	if in == nil || in.Service == "" {
		return
	}
	b := t.bucketLocked(in.Namespace, in.Service, true)
	// Share the strings every instance of a service and node repeats:
	// this is most of the memory of a large registry.
	in.Namespace, in.Service, in.Node = b.ns, b.name, t.internLocked(in.Node)
	addr := instanceAddr(in)
	if key == "" {
		key = instanceKey(b.ns, b.name, in.Node, instanceID(in))
	}
	ep := t.instances[key]
	if ep == nil && addr.IsValid() {
		// The same endpoint may be known under a key derived from a
		// snapshot; adopt the real key instead of holding it twice.
		for _, old := range b.eps {
			if old.addr == addr && old.inst.Node == in.Node {
				delete(t.instances, old.key)
				ep = old
				break
			}
		}
	}
	if ep != nil && ep.b != b {
		t.unlinkLocked(ep)
		ep.b = nil
	}
	if ep == nil {
		ep = t.newEndpoint()
	}
	if ep.addr != addr && t.byAddr[ep.addr] == ep {
		delete(t.byAddr, ep.addr)
	}
	ep.key, ep.inst, ep.addr, ep.node, ep.gen = key, in, addr, in.Node, t.gen
	if addr.IsValid() && addr.Port() != 0 {
		t.byAddr[addr] = ep
	}
	if ep.b == nil {
		ep.b, ep.idx, ep.hidx = b, int32(len(b.eps)), -1
		b.eps = append(b.eps, ep)
	}
	t.instances[key] = ep
	// Port 0 marks a client-only workload: registered so its node may hold
	// its identity, never an endpoint.
	pickable := in.Healthy && addr.IsValid() && addr.Port() != 0
	switch {
	case pickable && ep.hidx < 0:
		ep.hidx = int32(len(b.healthy))
		b.healthy = append(b.healthy, ep)
	case !pickable && ep.hidx >= 0:
		removeHealthy(b, ep)
	}
}

func (t *Table) newEndpoint() *endpoint {
	ep := &endpoint{hidx: -1}
	ep.done = func(err error, latency time.Duration) { t.release(ep, err, latency) }
	return ep
}

// deleteInstanceLocked removes the instance a key names. Keys never seen
// (instances that came in a snapshot) are matched by service, node and id.
func (t *Table) deleteInstanceLocked(key string) {
	ep := t.instances[key]
	if ep == nil {
		_, p, ok := splitKey(key, 4)
		if !ok {
			return
		}
		b := t.bucketLocked(p[0], p[1], false)
		if b == nil {
			return
		}
		for _, c := range b.eps {
			if c.inst.Node == p[2] && matchInstanceID(c, p[3]) {
				ep = c
				break
			}
		}
		if ep == nil {
			return
		}
	}
	delete(t.instances, ep.key)
	t.unlinkLocked(ep)
}

// unlinkLocked takes ep out of its bucket (swap-remove, O(1)) and drops
// the bucket when it is empty.
func (t *Table) unlinkLocked(ep *endpoint) {
	if t.byAddr[ep.addr] == ep {
		delete(t.byAddr, ep.addr)
	}
	b := ep.b
	if b == nil {
		return
	}
	if ep.hidx >= 0 {
		removeHealthy(b, ep)
	}
	last := len(b.eps) - 1
	moved := b.eps[last]
	b.eps[ep.idx], moved.idx = moved, ep.idx
	b.eps[last] = nil
	b.eps = b.eps[:last]
	t.gcBucketLocked(b)
}

func removeHealthy(b *bucket, ep *endpoint) {
	last := len(b.healthy) - 1
	moved := b.healthy[last]
	b.healthy[ep.hidx], moved.hidx = moved, ep.hidx
	b.healthy[last] = nil
	b.healthy = b.healthy[:last]
	ep.hidx = -1
}

func instanceAddr(in *api.Instance) netip.AddrPort {
	a, err := netip.ParseAddr(in.Ip)
	if err != nil || in.Port == 0 || in.Port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(in.Port))
}

// Endpoints returns every instance of ns/svc (healthy or not), for
// listings and status. The slice is the caller's.
func (t *Table) Endpoints(ns, svc string) []*api.Instance {
	t.mu.RLock()
	defer t.mu.RUnlock()
	b := t.bucketLocked(ns, svc, false)
	if b == nil {
		return nil
	}
	out := make([]*api.Instance, len(b.eps))
	for i, ep := range b.eps {
		out[i] = ep.inst
	}
	return out
}
