package control

import (
	"cmp"
	"slices"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// A call between two mesh workloads is seen twice: by the caller's agent
// (reporter "source") and by the callee's (reporter "destination"). Tap
// shows it once, as the caller saw it (its latency and retries are the
// whole call's): a destination report is dropped when a source report with
// the same trace id, caller, callee, method and path pairs with it, one
// for one. Reports without a trace id are never paired.

// callKey is what pairs the two reports of one call.
type callKey struct{ trace, src, dst, method, path string }

func keyOf(c *api.Call) (callKey, bool) {
	if c.GetTraceId() == "" {
		return callKey{}, false
	}
	return callKey{c.GetTraceId(), c.GetSourceWorkload(), c.GetDestinationService(), c.GetMethod(), c.GetPath()}, true
}

func byTime(a, b *api.Call) int { return cmp.Compare(a.GetTimeUnixNano(), b.GetTimeUnixNano()) }

// recentMerge keeps the last n calls of the agents' recent parts, in time
// order, each call once.
type recentMerge struct {
	n     int
	calls []*api.Call
}

// add merges one agent's recent calls; at most n of them are kept, so
// the merge holds at most 2n calls at any time.
func (m *recentMerge) add(cs []*api.Call) {
	cs = slices.DeleteFunc(slices.Clone(cs), func(c *api.Call) bool { return c == nil })
	slices.SortStableFunc(cs, byTime)
	if len(cs) > m.n {
		cs = cs[len(cs)-m.n:]
	}
	m.calls = append(m.calls, cs...)
	slices.SortStableFunc(m.calls, byTime)
	m.calls = pairOff(m.calls)
	if len(m.calls) > m.n {
		m.calls = slices.Clone(m.calls[len(m.calls)-m.n:])
	}
}

// pairOff drops the destination reports that a source report of the same
// call pairs with.
func pairOff(cs []*api.Call) []*api.Call {
	sources := map[callKey]int{}
	for _, c := range cs {
		if k, ok := keyOf(c); ok && c.GetReporter() == "source" {
			sources[k]++
		}
	}
	return slices.DeleteFunc(cs, func(c *api.Call) bool {
		k, ok := keyOf(c)
		if !ok || c.GetReporter() != "destination" || sources[k] == 0 {
			return false
		}
		sources[k]--
		return true
	})
}

// maxHeld bounds the reports liveDedup remembers or holds back.
const maxHeld = 1024

// liveDedup pairs reports of live calls as they arrive from different
// agents: a source report passes at once, a destination report is held
// for hold in case its source report follows (the callee's agent often
// records first), and passes alone when none does.
type liveDedup struct {
	hold    time.Duration
	held    []heldCall // destination reports, oldest first
	sources map[callKey]int
	seen    []heldCall // source reports not paired yet, oldest first
}

type heldCall struct {
	c   *api.Call
	key callKey
	at  time.Time
}

func newLiveDedup(hold time.Duration) *liveDedup {
	return &liveDedup{hold: hold, sources: map[callKey]int{}}
}

// add takes one live report; emit gets what passes now.
func (d *liveDedup) add(c *api.Call, now time.Time, emit func(*api.Call) error) error {
	k, ok := keyOf(c)
	switch {
	case !ok:
		return emit(c)
	case c.GetReporter() == "source":
		for i, h := range d.held {
			if h.key == k { // its destination report came first: drop it
				d.held = slices.Delete(d.held, i, i+1)
				return emit(c)
			}
		}
		if len(d.seen) < maxHeld {
			d.sources[k]++
			d.seen = append(d.seen, heldCall{c: c, key: k, at: now})
		}
		return emit(c)
	case c.GetReporter() == "destination":
		if d.sources[k] > 0 {
			d.unsee(k)
			return nil
		}
		if len(d.held) >= maxHeld {
			return emit(c)
		}
		d.held = append(d.held, heldCall{c: c, key: k, at: now})
		return nil
	}
	return emit(c)
}

// unsee forgets the oldest unpaired source report of k.
func (d *liveDedup) unsee(k callKey) {
	if d.sources[k]--; d.sources[k] <= 0 {
		delete(d.sources, k)
	}
	for i, h := range d.seen {
		if h.key == k {
			d.seen = slices.Delete(d.seen, i, i+1)
			return
		}
	}
}

// flush emits the destination reports held longer than hold, and forgets
// source reports that waited as long for a twin.
func (d *liveDedup) flush(now time.Time, emit func(*api.Call) error) error {
	for len(d.held) > 0 && now.Sub(d.held[0].at) >= d.hold {
		c := d.held[0].c
		d.held = d.held[1:]
		if err := emit(c); err != nil {
			return err
		}
	}
	for len(d.seen) > 0 && now.Sub(d.seen[0].at) >= d.hold {
		d.unsee(d.seen[0].key)
	}
	return nil
}
