package registry

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// Outlier ejection (passive health), and how latency estimates age.
const (
	ejectBase = time.Second
	ejectMax  = 30 * time.Second
	// consecutiveServerErrors 5xx answers in a row eject an endpoint (Envoy's
	// consecutive_5xx); one failed connect is enough, nothing listens there.
	consecutiveServerErrors = 5
	// maxEjectedPercent caps the endpoints of a service ejected at once (at
	// least one, never all), so a service-wide failure is left to the circuit
	// breaker and the retry budget instead of emptying the pool.
	maxEjectedPercent = 50
	ewmaWeightN       = 3 // new sample weight, in tenths
	// An estimate decays toward zero with the time since its last sample
	// (Linkerd's peak-EWMA decay), so an endpoint that keeps losing the
	// comparison is tried again and re-measured instead of starving.
	ewmaDecay = 5 * time.Second
	// The latency an endpoint not measured yet is assumed to have: low, so
	// a new endpoint is tried at once, but not zero, so its outstanding
	// connections still count.
	unmeasuredRTT = time.Microsecond
)

// ErrServerError is what done is given for an answer that was a server
// error (5xx): it counts toward ejection, but only consecutive ones eject.
var ErrServerError = errors.New("registry: endpoint answered a server error")

// Pick chooses a healthy endpoint of svc by power of two choices: two
// random candidates, the one with the lower (outstanding+1)×EWMA-latency
// wins; an endpoint not measured yet is assumed fast, so it is tried first. Endpoints in exclude (already tried) and passively ejected ones
// are skipped; when every remaining endpoint is ejected, the one whose
// ejection ends first is tried anyway (like Envoy's panic threshold) rather
// than failing the call. ok is false when svc has no healthy endpoint left.
//
// done must be called exactly once when the connection or request ends:
// a failed connect (any err but ErrServerError) ejects the endpoint, and so
// do consecutiveServerErrors ErrServerErrors in a row; an ejection lasts
// 1s, doubling per consecutive ejection up to 30s, and at most
// maxEjectedPercent of a service's endpoints (never all) are ejected at
// once. A success resets the counts and feeds latency (0 = not measured)
// into the EWMA.
func (t *Table) Pick(svc *api.Service, exclude ...netip.AddrPort) (ep netip.AddrPort, node string, done func(err error, latency time.Duration), ok bool) {
	if svc == nil {
		return netip.AddrPort{}, "", nil, false
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.pickLocked(t.serviceBucketLocked(svc), exclude)
}

// PickTarget is Pick(tgt.Service, exclude...) for a Target from LookupVIP,
// faster: it uses the service's bucket the lookup resolved instead of
// finding it again. A Target from before an update stays valid: once its
// bucket has left the table, the service is looked up again, so a retry
// picks from the current endpoints, never from replaced ones.
func (t *Table) PickTarget(tgt Target, exclude ...netip.AddrPort) (ep netip.AddrPort, node string, done func(err error, latency time.Duration), ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	b := tgt.b
	if b == nil || b.dead {
		if tgt.Service == nil {
			return netip.AddrPort{}, "", nil, false
		}
		b = t.serviceBucketLocked(tgt.Service)
	}
	return t.pickLocked(b, exclude)
}

// serviceBucketLocked is the bucket of svc. The services the table holds
// map straight to theirs; a pointer it no longer holds (the service was
// replaced or deleted since) falls back to the name, so a caller retrying
// with a stale Target picks from the current endpoints.
func (t *Table) serviceBucketLocked(svc *api.Service) *bucket {
	if b := t.bySvc[svc]; b != nil {
		return b
	}
	return t.bucketLocked(svc.Namespace, svc.Name, false)
}

// pickLocked is Pick within bucket b (nil: none), under the read lock.
func (t *Table) pickLocked(b *bucket, exclude []netip.AddrPort) (ep netip.AddrPort, node string, done func(err error, latency time.Duration), ok bool) {
	if b == nil || len(b.healthy) == 0 {
		return netip.AddrPort{}, "", nil, false
	}
	e := t.choose(b.healthy, exclude)
	if e == nil {
		return netip.AddrPort{}, "", nil, false
	}
	e.active.Add(1)
	return e.addr, e.node, e.done, true
}

// lazyClock reads the table's clock at most once per pick, and only when
// needed: for an ejected candidate, or to compare a measured endpoint with
// an unmeasured one. Reading it costs more than the rest of a pick on some
// machines.
type lazyClock struct {
	t   *Table
	now int64
	ok  bool
}

func (c *lazyClock) get() int64 {
	if !c.ok {
		c.now, c.ok = c.t.clock(), true
	}
	return c.now
}

// choose runs under the read lock.
func (t *Table) choose(hs []*endpoint, exclude []netip.AddrPort) *endpoint {
	clk := lazyClock{t: t}
	usable := func(e *endpoint) bool {
		if excluded(e.addr, exclude) {
			return false
		}
		until := e.ejectUntil.Load()
		return until == 0 || until <= clk.get()
	}
	n := len(hs)
	var a, c *endpoint
	if n == 1 {
		if usable(hs[0]) {
			return hs[0]
		}
	} else {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		if usable(hs[i]) {
			a = hs[i]
		}
		if usable(hs[j]) {
			if a == nil {
				a = hs[j]
			} else {
				c = hs[j]
			}
		}
		if a == nil || (c == nil && n > 2) {
			// A sampled candidate was ejected or excluded: scan from a random
			// start for usable ones. Rare, so O(n) is fine.
			start := rand.IntN(n)
			for k := 0; k < n && (a == nil || c == nil); k++ {
				e := hs[(start+k)%n]
				if e == a || e == c || !usable(e) {
					continue
				}
				if a == nil {
					a = e
				} else {
					c = e
				}
			}
		}
	}
	if a == nil {
		return leastEjected(hs, exclude)
	}
	if c != nil && cheaper(c, a, &clk) {
		return c
	}
	return a
}

// cheaper reports whether cost(x) < cost(y) at the current time. Both
// decays share that time: for two measured endpoints
// x·e^(-(now-sx)/τ) < y·e^(-(now-sy)/τ) ⇔ x·e^((sx-sy)/τ) < y, so only
// the gap between their samples matters and the clock is not read; two
// unmeasured ones cost (outstanding+1)×unmeasuredRTT each.
func cheaper(x, y *endpoint, clk *lazyClock) bool {
	rx, ry := x.ewma.Load(), y.ewma.Load()
	switch {
	case rx <= 0 && ry <= 0:
		return x.active.Load() < y.active.Load()
	case rx > 0 && ry > 0:
		d := float64(x.sampled.Load()-y.sampled.Load()) / float64(ewmaDecay)
		return float64(x.active.Load()+1)*float64(rx)*expGap(d) < float64(y.active.Load()+1)*float64(ry)
	}
	now := clk.get()
	return cost(x, now) < cost(y, now)
}

// expGap is e^d. Endpoints in use are sampled within a fraction of
// ewmaDecay of each other, where a 4th-order Taylor series is exact to
// 1e-6 and math.Exp would cost as much as the rest of the comparison.
func expGap(d float64) float64 {
	if d > -1.0/16 && d < 1.0/16 {
		return 1 + d*(1+d*(1.0/2+d*(1.0/6+d*(1.0/24))))
	}
	return math.Exp(d)
}

func excluded(addr netip.AddrPort, exclude []netip.AddrPort) bool {
	for _, x := range exclude {
		if x == addr {
			return true
		}
	}
	return false
}

// leastEjected is the panic fallback: the non-excluded endpoint whose
// ejection ends first.
func leastEjected(hs []*endpoint, exclude []netip.AddrPort) *endpoint {
	var best *endpoint
	var bestUntil int64
	for _, e := range hs {
		if excluded(e.addr, exclude) {
			continue
		}
		if u := e.ejectUntil.Load(); best == nil || u < bestUntil {
			best, bestUntil = e, u
		}
	}
	return best
}

func cost(e *endpoint, now int64) float64 {
	rtt := float64(e.ewma.Load())
	if rtt <= 0 {
		rtt = float64(unmeasuredRTT)
	} else {
		if age := now - e.sampled.Load(); age > 0 {
			rtt *= math.Exp(-float64(age) / float64(ewmaDecay))
		}
	}
	return float64(e.active.Load()+1) * rtt
}

// release is an endpoint's done.
func (t *Table) release(e *endpoint, err error, latency time.Duration) {
	e.active.Add(-1)
	if err != nil {
		if errors.Is(err, ErrServerError) && e.strikes.Add(1) < consecutiveServerErrors {
			return
		}
		t.eject(e)
		return
	}
	if e.strikes.Load() != 0 {
		e.strikes.Store(0)
	}
	if e.ejections.Load() != 0 {
		e.ejections.Store(0)
	}
	if e.ejectUntil.Load() != 0 {
		e.ejectUntil.Store(0)
	}
	if latency > 0 {
		// Racing updates may lose a sample; the average stays sound.
		old := e.ewma.Load()
		next := int64(latency)
		if old > 0 {
			next = old + (int64(latency)-old)*ewmaWeightN/10
		}
		e.ewma.Store(next)
		e.sampled.Store(t.clock())
	}
}

// eject takes e out of load balancing for its backoff, unless that would
// exceed the service's ejection cap. Failures are rare next to successes,
// so the write lock (which makes the cap exact) costs little.
func (t *Table) eject(e *endpoint) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock()
	if until := e.ejectUntil.Load(); (until == 0 || until <= now) && !t.mayEjectLocked(e, now) {
		return // strikes stay at the threshold: the next failure asks again
	}
	e.strikes.Store(0)
	f := e.ejections.Add(1)
	backoff := ejectMax
	if f <= 5 { // 1s<<5 = 32s > 30s
		backoff = min(ejectBase<<(f-1), ejectMax)
	}
	e.ejectUntil.Store(now + int64(backoff))
}

// mayEjectLocked reports whether one more of e's service's endpoints may
// be ejected now.
func (t *Table) mayEjectLocked(e *endpoint, now int64) bool {
	b := e.b
	if b == nil || e.hidx < 0 {
		return true // not pickable anyway
	}
	n := len(b.healthy)
	limit := max(1, n*maxEjectedPercent/100)
	if limit >= n {
		limit = n - 1
	}
	ejected := 0
	for _, o := range b.healthy {
		if o != e && o.ejectUntil.Load() > now {
			ejected++
		}
	}
	return ejected < limit
}
