package registry

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/hms-node/hms-node/pkg/api"
)

// Target is what a VIP:port leads to: a mesh service or an external one.
type Target struct {
	Service  *api.Service         // nil for an external
	External *api.ExternalService // nil for a mesh service
	// Port is the service port to use at the endpoint: the port dialled,
	// except on port 80 of an http service that does not declare 80, where
	// it is the service's main (first) port; for externals, the URL's port.
	Port uint16

	// b is the bucket of Service when the lookup was made, for PickTarget.
	b *bucket
}

// LookupVIP maps a connection's original destination to a service. A
// service answers on each declared port at its VIP, and on port 80 too
// when its protocol is "http"; externals answer on their URL's port (and
// on 80 for http and https URLs). v4-mapped addresses match their v4 VIP.
func (t *Table) LookupVIP(dst netip.AddrPort) (Target, bool) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	t.mu.RLock()
	e, ok := t.vips[dst]
	t.mu.RUnlock()
	if !ok {
		return Target{}, false
	}
	return Target{Service: e.svc, External: e.ext, Port: e.port, b: e.b}, true
}

// Mesh DNS suffixes (DESIGN §5).
const (
	suffixSvc  = ".svc"
	suffixMesh = ".mesh"
)

// LookupName answers mesh DNS: "<svc>.svc", "<svc>.<ns>.svc", "<svc>.mesh"
// and "<svc>.<ns>.mesh" (trailing dot optional, case-insensitive; the
// namespace defaults to "default") resolve to the VIP of a service or an
// external. mesh reports whether the name lies under a mesh suffix at all:
// when it does and found is false the DNS server answers NXDOMAIN instead of
// forwarding upstream.
func (t *Table) LookupName(name string) (vip netip.Addr, found, mesh bool) {
	name = strings.TrimSuffix(name, ".")
	var base string
	switch {
	case hasSuffixFold(name, suffixSvc):
		base = name[:len(name)-len(suffixSvc)]
	case hasSuffixFold(name, suffixMesh):
		base = name[:len(name)-len(suffixMesh)]
	case strings.EqualFold(name, suffixSvc[1:]), strings.EqualFold(name, suffixMesh[1:]):
		return netip.Addr{}, false, true
	default:
		return netip.Addr{}, false, false
	}
	svc, ns, two := strings.Cut(base, ".")
	if !two {
		ns = defaultNamespace
	}
	// DNS labels are at most 63 bytes; that bounds the lower-casing buffers.
	if svc == "" || ns == "" || len(svc) > 63 || len(ns) > 63 || strings.IndexByte(ns, '.') >= 0 {
		return netip.Addr{}, false, true
	}
	var nsBuf, svcBuf [63]byte
	t.mu.RLock()
	var m map[string]netip.Addr
	if hasUpper(ns) {
		m = t.names[string(lower(nsBuf[:0], ns))] // no allocation: map index by string(bytes)
	} else {
		m = t.names[ns]
	}
	if hasUpper(svc) {
		vip, found = m[string(lower(svcBuf[:0], svc))]
	} else {
		vip, found = m[svc]
	}
	t.mu.RUnlock()
	return vip, found, true
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) > len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

func lower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// VIPPort is one VIP:port the datapath must steer, with the id of the
// service (or external) behind it. Ids are stable for as long as the table
// knows the service.
type VIPPort struct {
	Addr       netip.AddrPort
	ID         uint32 // service (or external) id, nonzero
	TargetPort uint16 // Target.Port
	Namespace  string
	Name       string
	External   bool
}

// VIPs lists every VIP:port, sorted, for the agent to mirror into the
// datapath's service map.
func (t *Table) VIPs() []VIPPort {
	t.mu.RLock()
	out := make([]VIPPort, 0, len(t.vips))
	for ap, e := range t.vips {
		v := VIPPort{Addr: ap, ID: e.id, TargetPort: e.port}
		if e.svc != nil {
			v.Namespace, v.Name = nsOr(e.svc.Namespace), e.svc.Name
		} else {
			v.Namespace, v.Name, v.External = nsOr(e.ext.Namespace), e.ext.Name, true
		}
		out = append(out, v)
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b VIPPort) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Service returns the service ns/name, or nil.
func (t *Table) Service(ns, name string) *api.Service {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if b := t.bucketLocked(ns, name, false); b != nil {
		return b.svc
	}
	return nil
}

// Len is the number of services.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for _, nsb := range t.buckets {
		for _, b := range nsb {
			if b.svc != nil {
				n++
			}
		}
	}
	return n
}

// Services returns every service, sorted by namespace and name.
func (t *Table) Services() []*api.Service {
	t.mu.RLock()
	var out []*api.Service
	for _, nsb := range t.buckets {
		for _, b := range nsb {
			if b.svc != nil {
				out = append(out, b.svc)
			}
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b *api.Service) int {
		return cmp.Or(cmp.Compare(nsOr(a.Namespace), nsOr(b.Namespace)), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// RateLimit returns the rate limit of the service ns/svc.
func (t *Table) RateLimit(ns, svc string) (*api.RateLimit, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	b := t.bucketLocked(ns, svc, false)
	if b == nil || b.limit == nil {
		return nil, false
	}
	return b.limit, true
}

// Routes returns the route rules of the service ns/svc.
func (t *Table) Routes(ns, svc string) []*api.Route {
	t.mu.RLock()
	defer t.mu.RUnlock()
	b := t.bucketLocked(ns, svc, false)
	if b == nil {
		return nil
	}
	return slices.Clone(b.routes)
}

// Node returns a node announced in a delta.
func (t *Table) Node(name string) (*api.Node, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n, ok := t.nodes[name]
	return n, ok
}

// HealthyCount is how many healthy instances the service ns/svc has
// mesh-wide (its rate limit is split evenly across them).
func (t *Table) HealthyCount(ns, svc string) int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if b := t.bucketLocked(ns, svc, false); b != nil {
		return len(b.healthy)
	}
	return 0
}
