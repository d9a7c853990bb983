package registry

import (
	"net/netip"
	"testing"

	"github.com/hms-node/hms-node/pkg/api"
)

func svc(ns, name, vip, proto string, ports ...uint32) *api.Service {
	return &api.Service{Namespace: ns, Name: name, Vip: vip, Protocol: proto, Ports: ports}
}

func inst(ns, service, node, ip string, port uint32, healthy bool) *api.Instance {
	return &api.Instance{Namespace: ns, Service: service, Node: node, Ip: ip, Port: port, Healthy: healthy,
		Workload: "/var/run/netns/" + service + "-" + ip}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func change(key string, obj any) *api.Change {
	c := &api.Change{Key: key}
	switch o := obj.(type) {
	case nil:
		c.Deleted = true
	case *api.Service:
		c.Object = &api.Change_Service{Service: o}
	case *api.Instance:
		c.Object = &api.Change_Instance{Instance: o}
	case *api.ExternalService:
		c.Object = &api.Change_External{External: o}
	case *api.RateLimit:
		c.Object = &api.Change_Limit{Limit: o}
	case *api.Node:
		c.Object = &api.Change_Node{Node: o}
	}
	return c
}

// wantVIP checks what dst leads to: a service (or external) name and port,
// or nothing when name is "".
func wantVIP(t *testing.T, tb *Table, dst, name string, port uint16) {
	t.Helper()
	tg, ok := tb.LookupVIP(ap(dst))
	if name == "" {
		if ok {
			t.Fatalf("LookupVIP(%s) = %+v, want none", dst, tg)
		}
		return
	}
	got := ""
	switch {
	case tg.Service != nil:
		got = tg.Service.Name
	case tg.External != nil:
		got = tg.External.Name
	}
	if !ok || got != name || tg.Port != port {
		t.Fatalf("LookupVIP(%s) = %q port %d ok=%v, want %q port %d", dst, got, tg.Port, ok, name, port)
	}
}

func wantEndpoints(t *testing.T, tb *Table, ns, service string, n int) {
	t.Helper()
	if got := len(tb.Endpoints(ns, service)); got != n {
		t.Fatalf("Endpoints(%s, %s) = %d, want %d", ns, service, got, n)
	}
}

func TestSnapshotThenDeltas(t *testing.T) {
	tb := NewTable()
	tb.ApplySnapshot(&api.Snapshot{
		Revision: 10,
		Services: []*api.Service{
			svc("", "web", "240.240.0.1", "http", 8080),
			svc("shop", "db", "240.240.0.2", "tcp", 5432, 5433),
		},
		Instances: []*api.Instance{
			inst("", "web", "n1", "10.0.0.1", 8080, true),
			inst("default", "web", "n2", "10.0.0.2", 8080, true),
			inst("shop", "db", "n1", "10.0.1.1", 5432, true),
		},
		Externals: []*api.ExternalService{{Name: "pay", Url: "https://pay.example.com", Vip: "240.240.0.9"}},
		Limits:    []*api.RateLimit{{Service: "web", Rps: 50}},
	})
	if tb.Revision() != 10 {
		t.Fatalf("revision %d", tb.Revision())
	}
	wantVIP(t, tb, "240.240.0.1:8080", "web", 8080)
	wantVIP(t, tb, "240.240.0.1:80", "web", 8080) // http answers on 80 too
	wantVIP(t, tb, "240.240.0.2:5432", "db", 5432)
	wantVIP(t, tb, "240.240.0.2:5433", "db", 5433)
	wantVIP(t, tb, "240.240.0.2:80", "", 0) // tcp does not
	wantVIP(t, tb, "[::ffff:240.240.0.2]:5432", "db", 5432)
	wantVIP(t, tb, "240.240.0.9:443", "pay", 443)
	wantVIP(t, tb, "240.240.0.9:80", "pay", 443)
	wantEndpoints(t, tb, "default", "web", 2)
	if l, ok := tb.RateLimit("default", "web"); !ok || l.Rps != 50 {
		t.Fatalf("rate limit %v %v", l, ok)
	}

	// Update a service (new port, now tcp), add an instance with a key, add
	// a service, take a limit away.
	tb.ApplyDelta(&api.Delta{Revision: 11, Changes: []*api.Change{
		change("/hms/v1/services/default/web", svc("", "web", "240.240.0.1", "tcp", 9090)),
		change("/hms/v1/instances/default/web/n3/w3", inst("", "web", "n3", "10.0.0.3", 9090, true)),
		change("/hms/v1/services/default/api", svc("", "api", "240.240.0.3", "http", 80)),
		change("/hms/v1/ratelimits/default/web", nil),
		change("/hms/v1/nodes/n3", &api.Node{Name: "n3", Address: "192.0.2.3"}),
	}})
	wantVIP(t, tb, "240.240.0.1:8080", "", 0)
	wantVIP(t, tb, "240.240.0.1:80", "", 0)
	wantVIP(t, tb, "240.240.0.1:9090", "web", 9090)
	wantVIP(t, tb, "240.240.0.3:80", "api", 80)
	wantEndpoints(t, tb, "default", "web", 3)
	if _, ok := tb.RateLimit("default", "web"); ok {
		t.Fatal("rate limit survived its deletion")
	}
	if n, ok := tb.Node("n3"); !ok || n.Address != "192.0.2.3" {
		t.Fatal("node not stored")
	}

	// An old revision again is a no-op.
	tb.ApplyDelta(&api.Delta{Revision: 11, Changes: []*api.Change{change("/hms/v1/services/default/api", nil)}})
	wantVIP(t, tb, "240.240.0.3:80", "api", 80)

	// Deletions carry the key only: the keyed instance, a snapshot instance
	// (key never seen, matched by node and workload), a service, an external.
	tb.ApplyDelta(&api.Delta{Revision: 12, Changes: []*api.Change{
		change("/hms/v1/instances/default/web/n3/w3", nil),
		change("/hms/v1/instances/default/web/n1//var/run/netns/web-10.0.0.1", nil),
		change("/hms/v1/instances/shop/db/n1/10.0.1.1:5432", nil),
		change("/hms/v1/services/shop/db", nil),
		change("/hms/v1/externals/default/pay", nil),
	}})
	eps := tb.Endpoints("default", "web")
	if len(eps) != 1 || eps[0].Ip != "10.0.0.2" {
		t.Fatalf("web endpoints after deletes: %v", eps)
	}
	wantEndpoints(t, tb, "shop", "db", 0)
	wantVIP(t, tb, "240.240.0.2:5432", "", 0)
	wantVIP(t, tb, "240.240.0.9:443", "", 0)
	if _, found, _ := tb.LookupName("db.shop.svc"); found {
		t.Fatal("deleted service still resolves")
	}

	// An instance update (health flip) keeps one endpoint, not two.
	up := inst("", "web", "n2", "10.0.0.2", 8080, false)
	tb.ApplyDelta(&api.Delta{Revision: 13, Changes: []*api.Change{change("/hms/v1/instances/default/web/n2/x", up)}})
	eps = tb.Endpoints("default", "web")
	if len(eps) != 1 || eps[0].Healthy {
		t.Fatalf("after health flip: %v", eps)
	}

	// Keys as the control plane sends them: without /hms/v1/, the workload
	// path-escaped; a snapshot instance is deleted by that key directly.
	tb.ApplySnapshot(&api.Snapshot{Revision: 14, Services: []*api.Service{svc("", "web", "240.240.0.1", "http", 8080)},
		Instances: []*api.Instance{inst("", "web", "n1", "10.0.0.1", 8080, true), inst("", "web", "n2", "10.0.0.2", 8080, true)}})
	tb.ApplyDelta(&api.Delta{Revision: 15, Changes: []*api.Change{
		change("instances/default/web/n1/%2Fvar%2Frun%2Fnetns%2Fweb-10.0.0.1", nil),
		change("instances/default/web/n3/w3", inst("", "web", "n3", "10.0.0.3", 8080, true)),
	}})
	wantEndpoints(t, tb, "default", "web", 2)
	tb.ApplyDelta(&api.Delta{Revision: 16, Changes: []*api.Change{
		change("/hms/v1/instances/default/web/n3/w3", nil), change("services/default/web", nil)}})
	wantEndpoints(t, tb, "default", "web", 1)
	wantVIP(t, tb, "240.240.0.1:8080", "", 0)

	// A new snapshot replaces everything.
	tb.ApplySnapshot(&api.Snapshot{Revision: 20, Services: []*api.Service{svc("", "api", "240.240.0.3", "http", 80)}})
	wantVIP(t, tb, "240.240.0.1:9090", "", 0)
	wantVIP(t, tb, "240.240.0.3:80", "api", 80)
	wantEndpoints(t, tb, "default", "web", 0)
	if tb.Service("default", "api") == nil || tb.Service("default", "web") != nil || tb.Len() != 1 {
		t.Fatal("Service/Len after snapshot")
	}
	if got := len(tb.VIPs()); got != 1 {
		t.Fatalf("VIPs after snapshot: %d", got)
	}
}

func TestVIPs(t *testing.T) {
	tb := NewTable()
	tb.ApplySnapshot(&api.Snapshot{Revision: 1, Services: []*api.Service{
		svc("", "web", "240.240.0.1", "http", 8080),
		svc("", "db", "240.240.0.2", "tcp", 5432),
	}})
	v := tb.VIPs()
	want := []string{"240.240.0.1:80", "240.240.0.1:8080", "240.240.0.2:5432"}
	if len(v) != len(want) {
		t.Fatalf("VIPs = %+v", v)
	}
	for i, w := range want {
		if v[i].Addr.String() != w || v[i].ID == 0 {
			t.Fatalf("VIPs[%d] = %+v, want %s", i, v[i], w)
		}
	}
	if v[0].ID != v[1].ID || v[0].ID == v[2].ID || v[0].TargetPort != 8080 {
		t.Fatalf("service ids/ports: %+v", v)
	}
}

func TestLookupName(t *testing.T) {
	tb := NewTable()
	tb.ApplySnapshot(&api.Snapshot{Revision: 1,
		Services:  []*api.Service{svc("", "notify-svc", "240.240.0.1", "http", 7000), svc("billing", "ledger", "240.240.0.2", "tcp", 9000)},
		Externals: []*api.ExternalService{{Name: "sms", Url: "https://sms.example.com", Vip: "240.240.0.7"}},
	})
	cases := []struct {
		name        string
		vip         string
		found, mesh bool
	}{
		{"notify-svc.svc", "240.240.0.1", true, true},
		{"notify-svc.default.svc.", "240.240.0.1", true, true},
		{"notify-svc.mesh", "240.240.0.1", true, true},
		{"Notify-Svc.DEFAULT.Mesh.", "240.240.0.1", true, true},
		{"ledger.billing.svc", "240.240.0.2", true, true},
		{"ledger.billing.mesh.", "240.240.0.2", true, true},
		{"sms.svc", "240.240.0.7", true, true},
		{"ledger.svc", "", false, true},                        // wrong namespace: NXDOMAIN
		{"nope.mesh", "", false, true},                         // unknown: NXDOMAIN
		{"a.b.c.svc", "", false, true},                         // too many labels: NXDOMAIN
		{"svc.", "", false, true},                              // the suffix alone
		{"example.com.", "", false, false},                     // forward
		{"ledger.billing.svc.cluster.local", "", false, false}, // forward
		{"mysvc", "", false, false},                            // forward
	}
	for _, c := range cases {
		vip, found, mesh := tb.LookupName(c.name)
		if found != c.found || mesh != c.mesh || (c.found && vip.String() != c.vip) {
			t.Errorf("LookupName(%q) = %v %v %v, want %s %v %v", c.name, vip, found, mesh, c.vip, c.found, c.mesh)
		}
	}
	for _, n := range []string{"notify-svc.default.svc.", "Notify-Svc.DEFAULT.Mesh."} {
		if a := testing.AllocsPerRun(100, func() { tb.LookupName(n) }); a != 0 {
			t.Errorf("LookupName(%q) allocates %v", n, a)
		}
	}
	if a := testing.AllocsPerRun(100, func() { tb.LookupVIP(ap("240.240.0.1:80")) }); a != 0 {
		t.Errorf("LookupVIP allocates %v", a)
	}
}

func TestRevocationsAndInstanceAt(t *testing.T) {
	tb := NewTable()
	in := &api.Instance{Namespace: "default", Service: "notify-svc", Node: "n2", Ip: "10.250.2.2", Port: 7000, Healthy: true, Workload: "w"}
	tb.ApplySnapshot(&api.Snapshot{Revision: 1, Instances: []*api.Instance{in},
		Revocations: []*api.Revocation{{Node: "n9"}}})
	if !tb.Revoked("n9") || tb.Revoked("n2") {
		t.Fatal("snapshot revocations not applied")
	}
	got, ok := tb.InstanceAt(netip.MustParseAddrPort("10.250.2.2:7000"))
	if !ok || got.Node != "n2" {
		t.Fatalf("InstanceAt = %v, %v", got, ok)
	}
	tb.ApplyDelta(&api.Delta{Revision: 2, Changes: []*api.Change{
		{Key: "revocations/n2", Object: &api.Change_Revocation{Revocation: &api.Revocation{Node: "n2"}}},
	}})
	if !tb.Revoked("n2") {
		t.Fatal("delta revocation not applied")
	}
	tb.ApplySnapshot(&api.Snapshot{Revision: 3})
	if _, ok := tb.InstanceAt(netip.MustParseAddrPort("10.250.2.2:7000")); ok {
		t.Fatal("InstanceAt still answers after the instance left")
	}
	if tb.Revoked("n2") {
		t.Fatal("a snapshot without revocations kept one")
	}
}
