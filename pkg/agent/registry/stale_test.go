package registry

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// A connection holds the Target of its LookupVIP (and the done of its
// Pick) for as long as it lives, and retries Pick with that Target. These
// tests replace the service or its endpoints under such a connection: the
// stale Target must pick only current endpoints (as a fresh lookup does)
// and its done must leave the current endpoints' counters alone.

// staleTable holds web at 240.240.0.1 with a at 10.0.0.1 and b at
// 10.0.0.2, added by delta under the keys inKey names.
func staleTable(t *testing.T) *Table {
	t.Helper()
	tb := NewTable()
	tb.clock = func() int64 { return 1 } // ejections never expire
	tb.ApplyDelta(&api.Delta{Revision: 1, Changes: []*api.Change{
		change("/hms/v1/services/default/web", svc("", "web", "240.240.0.1", "http", 8080)),
		change(inKey("a"), inst("", "web", "n1", "10.0.0.1", 8080, true)),
		change(inKey("b"), inst("", "web", "n2", "10.0.0.2", 8080, true)),
	}})
	return tb
}

func inKey(id string) string { return "/hms/v1/instances/default/web/n/" + id }

// lookupPick is one connection's LookupVIP and Pick.
func lookupPick(t *testing.T, tb *Table) (Target, netip.AddrPort, func(error, time.Duration)) {
	t.Helper()
	tgt, ok := tb.LookupVIP(ap("240.240.0.1:80"))
	if !ok {
		t.Fatal("no service at the VIP")
	}
	ep, _, done, ok := tb.PickTarget(tgt)
	if !ok {
		t.Fatal("no pick")
	}
	return tgt, ep, done
}

// checkFresh asserts that picks, through the fresh Target and through the
// stale one alike, reach only want, and that the current endpoints carry
// no load and no ejection left over from the stale connection.
func checkFresh(t *testing.T, tb *Table, stale Target, want ...netip.AddrPort) {
	t.Helper()
	fresh, ok := tb.LookupVIP(ap("240.240.0.1:80"))
	if !ok {
		t.Fatal("no service at the VIP after the update")
	}
	if fresh.Service == stale.Service {
		t.Fatal("fresh lookup returned the replaced service")
	}
	type picker func() (netip.AddrPort, string, func(error, time.Duration), bool)
	for name, pick := range map[string]picker{
		"Pick(fresh)":       func() (netip.AddrPort, string, func(error, time.Duration), bool) { return tb.Pick(fresh.Service) },
		"Pick(stale)":       func() (netip.AddrPort, string, func(error, time.Duration), bool) { return tb.Pick(stale.Service) },
		"PickTarget(fresh)": func() (netip.AddrPort, string, func(error, time.Duration), bool) { return tb.PickTarget(fresh) },
		"PickTarget(stale)": func() (netip.AddrPort, string, func(error, time.Duration), bool) { return tb.PickTarget(stale) },
	} {
		seen := map[netip.AddrPort]int{}
		for range 200 {
			ep, _, done, ok := pick()
			if !ok {
				t.Fatalf("%s: no pick", name)
			}
			seen[ep]++
			done(nil, 0)
		}
		for _, w := range want {
			if seen[w] == 0 {
				t.Errorf("%s: %v never picked: %v", name, w, seen)
			}
			delete(seen, w)
		}
		if len(seen) != 0 {
			t.Errorf("%s: picked replaced endpoints %v", name, seen)
		}
	}
	tb.mu.RLock()
	defer tb.mu.RUnlock()
	b := tb.bySvc[fresh.Service]
	if b == nil || len(tb.bySvc) != 1 {
		t.Fatalf("bySvc holds %d services, fresh one: %v", len(tb.bySvc), b != nil)
	}
	for _, e := range b.healthy {
		if n, u := e.active.Load(), e.ejectUntil.Load(); n != 0 || u != 0 {
			t.Errorf("%v: %d outstanding, ejected until %d; want 0, 0", e.addr, n, u)
		}
	}
}

var errConnect = errors.New("connection refused")

// The service is deleted with its endpoints (the bucket goes) and created
// again with new ones, one at an address an old one had, while a
// connection is in flight; it then fails.
func TestStaleTargetAfterServiceRecreated(t *testing.T) {
	tb := staleTable(t)
	stale, _, done := lookupPick(t, tb)
	tb.ApplyDelta(&api.Delta{Revision: 2, Changes: []*api.Change{
		change("/hms/v1/services/default/web", nil),
		change(inKey("a"), nil),
		change(inKey("b"), nil),
	}})
	if _, _, _, ok := tb.PickTarget(stale); ok {
		t.Fatal("picked for a deleted service with no endpoints")
	}
	tb.ApplyDelta(&api.Delta{Revision: 3, Changes: []*api.Change{
		change("/hms/v1/services/default/web", svc("", "web", "240.240.0.1", "http", 8080)),
		change(inKey("c"), inst("", "web", "n1", "10.0.0.1", 8080, true)),
		change(inKey("d"), inst("", "web", "n3", "10.0.0.3", 8080, true)),
	}})
	done(errConnect, 0) // ejects the old endpoint, not the new one at its address
	checkFresh(t, tb, stale, ap("10.0.0.1:8080"), ap("10.0.0.3:8080"))
}

// The same through snapshots (a resync): one without the service, one with
// it again.
func TestStaleTargetAfterSnapshots(t *testing.T) {
	tb := staleTable(t)
	stale, _, done := lookupPick(t, tb)
	tb.ApplySnapshot(&api.Snapshot{Revision: 2})
	tb.ApplySnapshot(&api.Snapshot{Revision: 3,
		Services:  []*api.Service{svc("", "web", "240.240.0.1", "http", 8080)},
		Instances: []*api.Instance{inst("", "web", "n1", "10.0.0.1", 8080, true), inst("", "web", "n3", "10.0.0.3", 8080, true)}})
	done(errConnect, 0)
	checkFresh(t, tb, stale, ap("10.0.0.1:8080"), ap("10.0.0.3:8080"))
}

// The service object is replaced (an update) and its endpoints swapped for
// new ones while the bucket lives on.
func TestStaleTargetAfterEndpointsReplaced(t *testing.T) {
	tb := staleTable(t)
	stale, _, done := lookupPick(t, tb)
	tb.ApplyDelta(&api.Delta{Revision: 2, Changes: []*api.Change{
		change("/hms/v1/services/default/web", svc("", "web", "240.240.0.1", "http", 8080, 9090)),
		change(inKey("a"), nil),
		change(inKey("b"), nil),
		change(inKey("c"), inst("", "web", "n1", "10.0.0.1", 8080, true)),
		change(inKey("d"), inst("", "web", "n3", "10.0.0.3", 8080, true)),
	}})
	done(errConnect, 0)
	checkFresh(t, tb, stale, ap("10.0.0.1:8080"), ap("10.0.0.3:8080"))
}
