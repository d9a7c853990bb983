package registry

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// pickTable holds web with the given instances, and a fake clock.
func pickTable(t *testing.T, insts ...*api.Instance) (*Table, *api.Service, *int64) {
	t.Helper()
	tb := NewTable()
	var now int64 = 1
	tb.clock = func() int64 { return now }
	web := svc("", "web", "240.240.0.1", "http", 8080)
	tb.ApplySnapshot(&api.Snapshot{Revision: 1, Services: []*api.Service{web}, Instances: insts})
	return tb, web, &now
}

func TestPickOnlyHealthy(t *testing.T) {
	tb, web, _ := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, false),
		inst("", "web", "n3", "10.0.0.3", 8080, true))
	seen := map[netip.AddrPort]int{}
	for range 300 {
		ep, node, done, ok := tb.Pick(web)
		if !ok || node == "" {
			t.Fatal("no pick")
		}
		seen[ep]++
		done(nil, 0)
	}
	if seen[ap("10.0.0.2:8080")] != 0 || seen[ap("10.0.0.1:8080")] == 0 || seen[ap("10.0.0.3:8080")] == 0 {
		t.Fatalf("picks: %v", seen)
	}
	// Health flips are honoured; none healthy = no pick.
	tb.ApplyDelta(&api.Delta{Revision: 2, Changes: []*api.Change{
		change("/hms/v1/instances/default/web/n1/a", inst("", "web", "n1", "10.0.0.1", 8080, false)),
		change("/hms/v1/instances/default/web/n3/b", inst("", "web", "n3", "10.0.0.3", 8080, false)),
	}})
	if _, _, _, ok := tb.Pick(web); ok {
		t.Fatal("picked with no healthy endpoint")
	}
	if _, _, _, ok := tb.Pick(svc("", "ghost", "", "", 1)); ok {
		t.Fatal("picked for an unknown service")
	}
}

func TestPickPrefersLeastLoaded(t *testing.T) {
	a, b, c := ap("10.0.0.1:8080"), ap("10.0.0.2:8080"), ap("10.0.0.3:8080")
	tb, web, _ := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true),
		inst("", "web", "n3", "10.0.0.3", 8080, true))
	// Hold 5 connections on b and 10 on c (exclude steers the picks).
	hold := func(to netip.AddrPort, n int, not ...netip.AddrPort) {
		for range n {
			ep, _, _, ok := tb.Pick(web, not...)
			if !ok || ep != to {
				t.Fatalf("held pick went to %v, want %v", ep, to)
			}
		}
	}
	hold(b, 5, a, c)
	hold(c, 10, a, b)
	const n = 3000
	seen := map[netip.AddrPort]int{}
	for range n {
		ep, _, done, _ := tb.Pick(web)
		seen[ep]++
		done(nil, 0)
	}
	t.Logf("picks with b=5, c=10 held: %v", seen)
	// P2C: a wins whenever sampled (2/3), c never wins a pair.
	if seen[a] < n*55/100 || seen[c] != 0 {
		t.Fatalf("P2C spread: %v", seen)
	}
}

func TestPickPrefersLowLatency(t *testing.T) {
	tb, web, _ := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true))
	fast, slow := ap("10.0.0.1:8080"), ap("10.0.0.2:8080")
	seen := map[netip.AddrPort]int{}
	for range 1000 {
		ep, _, done, _ := tb.Pick(web)
		seen[ep]++
		if ep == fast {
			done(nil, time.Millisecond)
		} else {
			done(nil, 50*time.Millisecond)
		}
	}
	t.Logf("picks, 1ms vs 50ms: %v", seen)
	if seen[fast] < 900 || seen[slow] == 0 {
		t.Fatalf("EWMA: %v", seen)
	}
}

// A slower endpoint is not starved for good: it is tried before it has a
// sample, and again once the faster one's lead has decayed.
func TestPickReprobesAfterDecay(t *testing.T) {
	tb, web, now := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true))
	fast, slow := ap("10.0.0.1:8080"), ap("10.0.0.2:8080")
	lat := map[netip.AddrPort]time.Duration{fast: 300 * time.Microsecond, slow: 2 * time.Millisecond}
	call := func() netip.AddrPort {
		ep, _, done, _ := tb.Pick(web)
		done(nil, lat[ep])
		*now += int64(10 * time.Millisecond) // sequential calls, 100/s
		return ep
	}
	// Both are unmeasured: whichever goes first, the other is next.
	if a, b := call(), call(); a == b {
		t.Fatalf("first two picks both went to %v", a)
	}
	// Now slow has a 2 ms sample and fast keeps being refreshed at 0.3 ms:
	// slow must come back within ewmaDecay×ln(2/0.3) ≈ 9.5 s of calls.
	seen := map[netip.AddrPort]int{}
	for range 2000 { // 20 s of calls
		seen[call()]++
	}
	t.Logf("picks over 20 s, 0.3 ms vs 2 ms: %v", seen)
	if seen[slow] == 0 || seen[fast] < 1900 {
		t.Fatalf("decay: %v", seen)
	}
}

func TestPickEjectsAfterConnectFailure(t *testing.T) {
	good, bad := ap("10.0.0.1:8080"), ap("10.0.0.2:8080")
	tb, web, now := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true))
	fail := func() {
		t.Helper()
		ep, _, done, ok := tb.Pick(web, good)
		if !ok || ep != bad {
			t.Fatalf("forced pick = %v %v", ep, ok)
		}
		done(errors.New("connection refused"), 0)
	}
	// probe picks until it gets bad; the trial connection to bad fails
	// again when failAgain is set.
	probe := func(failAgain bool) bool {
		for range 200 {
			ep, _, done, _ := tb.Pick(web)
			if ep == bad && failAgain {
				done(errors.New("connection refused"), 0)
				return true
			}
			done(nil, 0)
			if ep == bad {
				return true
			}
		}
		return false
	}
	advance := func(d time.Duration) { *now += int64(d) }

	// Consecutive failures eject for 1s, 2s, 4s ... capped at 30s.
	fail()
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second} {
		advance(want - time.Millisecond)
		if probe(true) {
			t.Fatalf("failure %d: picked before %v", i+1, want)
		}
		advance(time.Millisecond)
		if !probe(true) {
			t.Fatalf("failure %d: not back after %v", i+1, want)
		}
	}
	// A success resets the count: the next failure ejects for 1s again.
	advance(30 * time.Second)
	if !probe(false) {
		t.Fatal("not back after 30s")
	}
	fail()
	advance(time.Second)
	if !probe(false) {
		t.Fatal("backoff not reset by a success")
	}
	// The cap: with bad ejected, good (the other half of two) is not
	// ejected by a failure, so the pool is never empty.
	fail()
	advance(10 * time.Millisecond)
	ep, _, done, _ := tb.Pick(web, bad)
	done(errors.New("refused"), 0)
	if ep != good {
		t.Fatalf("forced pick of good = %v", ep)
	}
	for range 50 {
		if ep, _, done, ok := tb.Pick(web); !ok || ep != good {
			t.Fatalf("pick with bad ejected = %v %v, want good (not ejected: cap)", ep, ok)
		} else {
			done(nil, 0)
		}
	}
	if _, _, _, ok := tb.Pick(web, good, bad); ok {
		t.Fatal("picked with every endpoint excluded")
	}
}

func TestPickNoAllocs(t *testing.T) {
	tb, web, _ := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true),
		inst("", "web", "n3", "10.0.0.3", 8080, true))
	ex := ap("10.0.0.1:8080")
	if a := testing.AllocsPerRun(1000, func() {
		_, _, done, _ := tb.Pick(web, ex)
		done(nil, time.Millisecond)
	}); a != 0 {
		t.Fatalf("Pick allocates %v", a)
	}
	if a := testing.AllocsPerRun(1000, func() {
		tgt, _ := tb.LookupVIP(ap("240.240.0.1:80"))
		_, _, done, _ := tb.PickTarget(tgt, ex)
		done(nil, time.Millisecond)
	}); a != 0 {
		t.Fatalf("LookupVIP + PickTarget allocates %v", a)
	}
}

// TestConcurrentLookupsAndUpdates runs lookups and picks while deltas flip
// health and snapshots replace the table; run with -race.
func TestConcurrentLookupsAndUpdates(t *testing.T) {
	tb, web, _ := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				tb.LookupVIP(ap("240.240.0.1:80"))
				tb.LookupName("web.svc")
				if _, _, done, ok := tb.Pick(web); ok {
					done(nil, time.Microsecond)
				}
			}
		}()
	}
	for i := int64(2); i < 500; i++ {
		if i%100 == 0 {
			tb.ApplySnapshot(&api.Snapshot{Revision: i, Services: []*api.Service{web},
				Instances: []*api.Instance{inst("", "web", "n1", "10.0.0.1", 8080, true)}})
			continue
		}
		tb.ApplyDelta(&api.Delta{Revision: i, Changes: []*api.Change{
			change("/hms/v1/instances/default/web/n2/b", inst("", "web", "n2", "10.0.0.2", 8080, i%2 == 0))}})
	}
	close(stop)
	wg.Wait()
	if tb.Revision() != 499 {
		t.Fatalf("revision %d", tb.Revision())
	}
}

func TestPickEjectsAfterConsecutiveServerErrorsWithCap(t *testing.T) {
	eps := []netip.AddrPort{ap("10.0.0.1:8080"), ap("10.0.0.2:8080"), ap("10.0.0.3:8080"), ap("10.0.0.4:8080")}
	tb, web, now := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true),
		inst("", "web", "n3", "10.0.0.3", 8080, true),
		inst("", "web", "n4", "10.0.0.4", 8080, true))
	// answer forces a pick of eps[i] and ends it with err.
	answer := func(i int, err error) {
		t.Helper()
		var others []netip.AddrPort
		for j, e := range eps {
			if j != i {
				others = append(others, e)
			}
		}
		ep, _, done, ok := tb.Pick(web, others...)
		if !ok || ep != eps[i] {
			t.Fatalf("forced pick of %v = %v %v", eps[i], ep, ok)
		}
		done(err, time.Millisecond)
	}
	picked := func(i int) bool {
		for range 400 {
			ep, _, done, _ := tb.Pick(web)
			done(nil, time.Millisecond)
			if ep == eps[i] {
				return true
			}
		}
		return false
	}
	// Four 5xx in a row do not eject; a success in between resets the count.
	for range 4 {
		answer(0, ErrServerError)
	}
	answer(0, nil)
	for range 4 {
		answer(0, ErrServerError)
	}
	if !picked(0) {
		t.Fatal("ejected before 5 consecutive server errors")
	}
	// picked(0) ended with successes: five in a row now eject it.
	for range 5 {
		answer(0, ErrServerError)
	}
	if picked(0) {
		t.Fatal("not ejected after 5 consecutive server errors")
	}
	// Cap: 50% of 4 = 2 ejected at once. A second endpoint is ejected, a
	// third is not, however often it fails.
	answer(1, errors.New("refused"))
	for range 20 {
		answer(2, ErrServerError)
	}
	answer(2, errors.New("refused"))
	if picked(1) {
		t.Fatal("second endpoint not ejected")
	}
	if !picked(2) {
		t.Fatal("third endpoint ejected: the cap (2 of 4) was not applied")
	}
	// Once an ejection ends, the slot is free again.
	*now += int64(time.Second)
	for range 5 {
		answer(3, ErrServerError)
	}
	if picked(3) {
		t.Fatal("not ejected after the earlier ejections ended")
	}
}

func TestPickPanicFallbackWhenOnlyEjectedRemain(t *testing.T) {
	bad, other := ap("10.0.0.2:8080"), ap("10.0.0.3:8080")
	tb, web, _ := pickTable(t,
		inst("", "web", "n1", "10.0.0.1", 8080, true),
		inst("", "web", "n2", "10.0.0.2", 8080, true),
		inst("", "web", "n3", "10.0.0.3", 8080, true))
	ep, _, done, _ := tb.Pick(web, ap("10.0.0.1:8080"), other)
	done(errors.New("refused"), 0)
	if ep != bad {
		t.Fatalf("forced pick = %v", ep)
	}
	// n1 leaves the healthy set; excluding n3, only the ejected bad remains
	// and is tried rather than failing the call.
	tb.ApplyDelta(&api.Delta{Revision: 2, Changes: []*api.Change{
		change("/hms/v1/instances/default/web/n1/a", inst("", "web", "n1", "10.0.0.1", 8080, false)),
	}})
	if ep, _, _, ok := tb.Pick(web, other); !ok || ep != bad {
		t.Fatalf("panic fallback = %v %v, want the ejected endpoint", ep, ok)
	}
}
