package registry

import (
	"net/netip"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// Table is the agent's in-memory registry: services by VIP:port and by
// name, endpoints per service, externals, rate limits, routes and nodes.
// It is safe for concurrent use. Writers (ApplySnapshot, ApplyDelta) take
// the write lock; lookups take the read lock and allocate nothing. The
// objects it hands out (services, instances) are never modified after they
// are stored — an update replaces the pointer — so callers may keep them.
// The zero Table is not ready; use NewTable.
type Table struct {
	epoch time.Time
	// clock returns monotonic nanoseconds; tests replace it.
	clock func() int64

	// mu guards the fields below. Endpoint load counters are atomics and
	// are updated without it.
	mu        sync.RWMutex
	rev       int64
	gen       uint64 // bumped by each snapshot; stale objects are swept
	nextID    uint32
	buckets   map[string]map[string]*bucket    // ns → name
	bySvc     map[*api.Service]*bucket         // the stored services, for Pick
	externals map[string]map[string]*extEntry  // ns → name
	names     map[string]map[string]netip.Addr // lower-case ns → name → VIP
	vips      map[netip.AddrPort]vipEntry
	instances map[string]*endpoint // registry key → endpoint
	byAddr    map[netip.AddrPort]*endpoint
	nodes     map[string]*api.Node
	revoked   map[string]bool   // node names cut off by `node revoke`
	strs      map[string]string // interned node names
}

// bucket is everything known under one (namespace, service name): the
// service itself may be absent while instances, a limit or routes exist.
type bucket struct {
	// healthy comes first: it is all a pick reads of a cold bucket.
	healthy  []*endpoint // the pickable subset: healthy with a valid address
	ns, name string
	id       uint32
	svc      *api.Service
	svcGen   uint64
	eps      []*endpoint // every instance
	limit    *api.RateLimit
	routes   []*api.Route
	// dead is set when the bucket leaves the table: a Target holding it
	// must look the service up again (a new bucket may hold it by now).
	dead bool
}

type extEntry struct {
	ext *api.ExternalService
	id  uint32
	gen uint64
}

// vipEntry is what one VIP:port leads to.
type vipEntry struct {
	svc  *api.Service
	ext  *api.ExternalService
	port uint16
	id   uint32
	b    *bucket // svc's bucket
}

// NewTable returns an empty table at revision 0.
func NewTable() *Table {
	t := &Table{epoch: time.Now()}
	t.clock = func() int64 { return int64(time.Since(t.epoch)) }
	t.resetLocked()
	return t
}

func (t *Table) resetLocked() {
	t.buckets = make(map[string]map[string]*bucket)
	t.bySvc = make(map[*api.Service]*bucket)
	t.externals = make(map[string]map[string]*extEntry)
	t.names = make(map[string]map[string]netip.Addr)
	t.vips = make(map[netip.AddrPort]vipEntry)
	t.instances = make(map[string]*endpoint)
	t.byAddr = make(map[netip.AddrPort]*endpoint)
	if t.nodes == nil {
		t.nodes = make(map[string]*api.Node)
	}
	if t.strs == nil {
		t.strs = make(map[string]string)
	}
}

// Revision is the registry revision of the last snapshot or delta applied.
func (t *Table) Revision() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.rev
}

// ApplySnapshot replaces everything with s. Endpoints that survive (same
// key) keep their load-balancing state. Nodes are not part of a snapshot
// and are kept.
func (t *Table) ApplySnapshot(s *api.Snapshot) {
	if s == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	for _, nsb := range t.buckets {
		for _, b := range nsb {
			b.limit, b.routes = nil, nil
		}
	}
	for _, svc := range s.Services {
		t.putServiceLocked(svc)
	}
	for _, in := range s.Instances {
		t.putInstanceLocked("", in)
	}
	for _, e := range s.Externals {
		t.putExternalLocked(e)
	}
	for _, r := range s.Routes {
		t.putRouteLocked(r)
	}
	for _, l := range s.Limits {
		t.putLimitLocked(l)
	}
	t.revoked = map[string]bool{}
	for _, r := range s.Revocations {
		t.revoked[r.Node] = true
	}
	for _, n := range s.Nodes {
		if n.GetName() != "" {
			t.nodes[n.Name] = n
		}
	}
	t.sweepLocked()
	t.rev = s.Revision
}

// sweepLocked drops whatever the current snapshot did not mention.
func (t *Table) sweepLocked() {
	for key, ep := range t.instances {
		if ep.gen != t.gen {
			delete(t.instances, key)
			t.unlinkLocked(ep)
		}
	}
	for _, nsm := range t.externals {
		for _, e := range nsm {
			if e.gen != t.gen {
				t.deleteExternalLocked(nsOr(e.ext.Namespace), e.ext.Name)
			}
		}
	}
	for _, nsb := range t.buckets {
		for _, b := range nsb {
			if b.svc != nil && b.svcGen != t.gen {
				t.unindexServiceLocked(b)
				b.svc = nil
			}
			t.gcBucketLocked(b)
		}
	}
}

// ApplyDelta applies the changes of one revision. A delta at or below the
// current revision was applied already and is ignored.
func (t *Table) ApplyDelta(d *api.Delta) {
	t.applyDelta(d)
}

// applyDelta reports whether d changed the table.
func (t *Table) applyDelta(d *api.Delta) bool {
	if d == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if d.Revision <= t.rev {
		return false
	}
	for _, c := range d.Changes {
		t.applyChangeLocked(c)
	}
	t.rev = d.Revision
	return true
}

func (t *Table) applyChangeLocked(c *api.Change) {
	if c == nil {
		return
	}
	key := canonKey(c.Key)
	if c.Deleted {
		t.deleteKeyLocked(key)
		return
	}
	switch o := c.Object.(type) {
	case *api.Change_Service:
		t.putServiceLocked(o.Service)
	case *api.Change_Instance:
		t.putInstanceLocked(key, o.Instance)
	case *api.Change_External:
		t.putExternalLocked(o.External)
	case *api.Change_Route:
		t.putRouteLocked(o.Route)
	case *api.Change_Limit:
		t.putLimitLocked(o.Limit)
	case *api.Change_Node:
		if o.Node != nil && o.Node.Name != "" {
			t.nodes[o.Node.Name] = o.Node
		}
	case *api.Change_Revocation:
		if o.Revocation.GetNode() != "" {
			if t.revoked == nil {
				t.revoked = map[string]bool{}
			}
			t.revoked[o.Revocation.Node] = true
		}
	}
}

// Revoked tells whether a node was cut off: peers refuse its certificates.
func (t *Table) Revoked(node string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.revoked[node]
}

// InstanceAt returns the registered instance at a pod IP:port, if any: a
// connection to it is a mesh call to that instance.
func (t *Table) InstanceAt(addr netip.AddrPort) (*api.Instance, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ep, ok := t.byAddr[addr]
	if !ok {
		return nil, false
	}
	return ep.inst, true
}

// deleteKeyLocked removes the object a registry key names.
func (t *Table) deleteKeyLocked(key string) {
	switch keyKind(key) {
	case kindService:
		if _, p, ok := splitKey(key, 2); ok {
			if b := t.bucketLocked(p[0], p[1], false); b != nil && b.svc != nil {
				t.unindexServiceLocked(b)
				b.svc = nil
				t.gcBucketLocked(b)
			}
		}
	case kindInstance:
		t.deleteInstanceLocked(key)
	case kindExternal:
		if _, p, ok := splitKey(key, 2); ok {
			t.deleteExternalLocked(p[0], p[1])
		}
	case kindLimit:
		if _, p, ok := splitKey(key, 2); ok {
			if b := t.bucketLocked(p[0], p[1], false); b != nil {
				b.limit = nil
				t.gcBucketLocked(b)
			}
		}
	case kindRoute:
		t.deleteRouteLocked(key)
	case kindNode:
		if _, p, ok := splitKey(key, 1); ok {
			delete(t.nodes, p[0])
		}
	}
}

// bucketLocked finds (or, with create, makes) the bucket of ns/name.
func (t *Table) bucketLocked(ns, name string, create bool) *bucket {
	ns = nsOr(ns)
	nsb := t.buckets[ns]
	if b := nsb[name]; b != nil || !create {
		return b
	}
	if nsb == nil {
		nsb = make(map[string]*bucket)
		t.buckets[ns] = nsb
	}
	t.nextID++
	b := &bucket{ns: ns, name: name, id: t.nextID}
	nsb[name] = b
	return b
}

// gcBucketLocked drops b once nothing lives in it.
func (t *Table) gcBucketLocked(b *bucket) {
	if b.svc != nil || len(b.eps) > 0 || b.limit != nil || len(b.routes) > 0 {
		return
	}
	nsb := t.buckets[b.ns]
	if nsb[b.name] == b {
		b.dead = true
		delete(nsb, b.name)
		if len(nsb) == 0 {
			delete(t.buckets, b.ns)
		}
	}
}

func (t *Table) internLocked(s string) string {
	if v, ok := t.strs[s]; ok {
		return v
	}
	t.strs[s] = s
	return s
}
