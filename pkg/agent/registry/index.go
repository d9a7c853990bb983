package registry

import (
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/hms-node/hms-node/pkg/api"
)

func (t *Table) putServiceLocked(s *api.Service) {
	if s == nil || s.Name == "" {
		return
	}
	b := t.bucketLocked(s.Namespace, s.Name, true)
	if b.svc != nil {
		t.unindexServiceLocked(b)
	}
	b.svc, b.svcGen = s, t.gen
	t.bySvc[s] = b
	vip, ok := parseVIP(s.Vip)
	if !ok {
		return
	}
	e := vipEntry{svc: s, id: b.id, b: b}
	for _, p := range s.Ports {
		if p == 0 || p > 65535 {
			continue
		}
		e.port = uint16(p)
		t.vips[netip.AddrPortFrom(vip, e.port)] = e
	}
	if isHTTP(s.Protocol) && !hasPort(s.Ports, 80) {
		e.port = mainPort(s.Ports, 80)
		t.vips[netip.AddrPortFrom(vip, 80)] = e
	}
	t.setNameLocked(b.ns, b.name, vip)
}

// unindexServiceLocked undoes putServiceLocked for b.svc; every path that
// replaces or clears b.svc calls it first.
func (t *Table) unindexServiceLocked(b *bucket) {
	s := b.svc
	if t.bySvc[s] == b {
		delete(t.bySvc, s)
	}
	vip, ok := parseVIP(s.Vip)
	if !ok {
		return
	}
	for _, p := range s.Ports {
		t.dropVIPLocked(netip.AddrPortFrom(vip, uint16(p)), s, nil)
	}
	t.dropVIPLocked(netip.AddrPortFrom(vip, 80), s, nil)
	t.clearNameLocked(b.ns, b.name, vip)
}

// dropVIPLocked removes ap only if it still leads to svc (or ext): another
// object may have taken the address since.
func (t *Table) dropVIPLocked(ap netip.AddrPort, svc *api.Service, ext *api.ExternalService) {
	if e, ok := t.vips[ap]; ok && e.svc == svc && e.ext == ext {
		delete(t.vips, ap)
	}
}

func (t *Table) putExternalLocked(x *api.ExternalService) {
	if x == nil || x.Name == "" {
		return
	}
	ns := nsOr(x.Namespace)
	nsm := t.externals[ns]
	if nsm == nil {
		nsm = make(map[string]*extEntry)
		t.externals[ns] = nsm
	}
	e := nsm[x.Name]
	if e == nil {
		t.nextID++
		e = &extEntry{id: t.nextID}
		nsm[x.Name] = e
	} else {
		t.unindexExternalLocked(ns, e)
	}
	e.ext, e.gen = x, t.gen
	vip, ok := parseVIP(x.Vip)
	if !ok {
		return
	}
	port, web := externalPort(x.Url)
	if port != 0 {
		t.vips[netip.AddrPortFrom(vip, port)] = vipEntry{ext: x, port: port, id: e.id}
		if web {
			t.vips[netip.AddrPortFrom(vip, 80)] = vipEntry{ext: x, port: port, id: e.id}
		}
	}
	t.setNameLocked(ns, x.Name, vip)
}

func (t *Table) unindexExternalLocked(ns string, e *extEntry) {
	vip, ok := parseVIP(e.ext.Vip)
	if !ok {
		return
	}
	port, _ := externalPort(e.ext.Url)
	t.dropVIPLocked(netip.AddrPortFrom(vip, port), nil, e.ext)
	t.dropVIPLocked(netip.AddrPortFrom(vip, 80), nil, e.ext)
	t.clearNameLocked(ns, e.ext.Name, vip)
}

func (t *Table) deleteExternalLocked(ns, name string) {
	nsm := t.externals[ns]
	e := nsm[name]
	if e == nil {
		return
	}
	delete(nsm, name)
	if len(nsm) == 0 {
		delete(t.externals, ns)
	}
	t.unindexExternalLocked(ns, e)
}

// setNameLocked makes <name>.<ns> resolve to vip.
func (t *Table) setNameLocked(ns, name string, vip netip.Addr) {
	lns, lname := strings.ToLower(ns), strings.ToLower(name)
	m := t.names[lns]
	if m == nil {
		m = make(map[string]netip.Addr)
		t.names[lns] = m
	}
	m[lname] = vip
}

// clearNameLocked removes <name>.<ns> if it still resolves to vip, then
// lets a service or external of the same name take it back.
func (t *Table) clearNameLocked(ns, name string, vip netip.Addr) {
	lns, lname := strings.ToLower(ns), strings.ToLower(name)
	m := t.names[lns]
	if m[lname] != vip {
		return
	}
	delete(m, lname)
	if len(m) == 0 {
		delete(t.names, lns)
	}
	if b := t.bucketLocked(ns, name, false); b != nil && b.svc != nil && b.svc.Vip != "" {
		if v, ok := parseVIP(b.svc.Vip); ok && v != vip {
			t.setNameLocked(ns, name, v)
			return
		}
	}
	if e := t.externals[ns][name]; e != nil {
		if v, ok := parseVIP(e.ext.Vip); ok && v != vip {
			t.setNameLocked(ns, name, v)
		}
	}
}

func (t *Table) putLimitLocked(l *api.RateLimit) {
	if l == nil || l.Service == "" {
		return
	}
	t.bucketLocked(l.Namespace, l.Service, true).limit = l
}

func (t *Table) putRouteLocked(r *api.Route) {
	if r == nil || r.Service == "" {
		return
	}
	b := t.bucketLocked(r.Namespace, r.Service, true)
	for i, old := range b.routes {
		if old.Path == r.Path {
			b.routes[i] = r
			return
		}
	}
	b.routes = append(b.routes, r)
}

func (t *Table) deleteRouteLocked(key string) {
	_, p, ok := splitKey(key, 3)
	if !ok {
		return
	}
	b := t.bucketLocked(p[0], p[1], false)
	if b == nil {
		return
	}
	for i, r := range b.routes {
		if matchRoutePath(r.Path, p[2]) {
			b.routes = append(b.routes[:i:i], b.routes[i+1:]...)
			break
		}
	}
	t.gcBucketLocked(b)
}

func parseVIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func isHTTP(proto string) bool { return strings.EqualFold(proto, "http") }

func hasPort(ports []uint32, p uint32) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

// mainPort is the first valid declared port, or def.
func mainPort(ports []uint32, def uint16) uint16 {
	for _, p := range ports {
		if p > 0 && p <= 65535 {
			return uint16(p)
		}
	}
	return def
}

// externalPort is the port an external URL names (explicitly or by its
// scheme); web is true for http and https, which also answer on port 80 at
// the VIP so that http://<name>.svc/ works (the proxy originates TLS for
// https).
func externalPort(raw string) (port uint16, web bool) {
	if !strings.Contains(raw, "://") {
		if _, p, err := net.SplitHostPort(raw); err == nil {
			n, _ := strconv.ParseUint(p, 10, 16)
			return uint16(n), false
		}
		return 0, false
	}
	u, err := url.Parse(raw)
	if err != nil {
		return 0, false
	}
	scheme := strings.ToLower(u.Scheme)
	web = scheme == "http" || scheme == "https"
	if p := u.Port(); p != "" {
		n, _ := strconv.ParseUint(p, 10, 16)
		return uint16(n), web
	}
	switch scheme {
	case "http":
		return 80, true
	case "https":
		return 443, true
	}
	return 0, false
}
