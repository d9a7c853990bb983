package stats

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// bounds are the upper bounds, in microseconds, of the latency histogram's
// buckets (1-2.5-5 steps from 0.5 ms to 60 s); a last bucket holds the rest.
// The p99 of an edge is the bound of the bucket its 99th percentile falls
// in, capped by the slowest call seen: coarse, but fixed in size and
// cheap on the proxy's path.
var bounds = [...]int64{
	500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
	1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
}

// MaxEdges bounds the edges of one window; calls of further edges are
// counted only in Overflow.
const MaxEdges = 10_000

type edgeKey struct{ src, dst string }

type edge struct {
	requests, errors uint64
	maxUS            int64
	hist             [len(bounds) + 1]uint64
}

// Aggregator counts calls per edge; its methods are safe for concurrent use.
// The zero value is not usable: call New.
type Aggregator struct {
	// mu guards the fields below.
	mu       sync.Mutex
	edges    map[edgeKey]*edge
	overflow uint64
}

// New returns an empty Aggregator.
func New() *Aggregator {
	return &Aggregator{edges: map[edgeKey]*edge{}}
}

// Observe counts one call on its (SourceWorkload, DestinationService) edge:
// a request, an error when its status is 5xx or 0 (no response), and its
// latency. It allocates only for an edge's first call of a window.
func (a *Aggregator) Observe(c *api.Call) {
	if c == nil {
		return
	}
	us := max(c.GetLatencyUs(), 0)
	b := len(bounds)
	for i, ub := range bounds {
		if us <= ub {
			b = i
			break
		}
	}
	failed := c.GetStatus() == 0 || c.GetStatus() >= 500
	k := edgeKey{c.GetSourceWorkload(), c.GetDestinationService()}
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.edges[k]
	if e == nil {
		if len(a.edges) >= MaxEdges {
			a.overflow++
			return
		}
		e = &edge{}
		a.edges[k] = e
	}
	e.requests++
	if failed {
		e.errors++
	}
	e.maxUS = max(e.maxUS, us)
	e.hist[b]++
}

// Take returns the edges counted since the last Take, sorted by source and
// destination, as a Stats covering window, and starts a new window.
func (a *Aggregator) Take(window time.Duration) *api.Stats {
	a.mu.Lock()
	edges := a.edges
	a.edges = make(map[edgeKey]*edge, len(edges))
	a.overflow = 0
	a.mu.Unlock()
	st := &api.Stats{WindowMs: window.Milliseconds(), Edges: make([]*api.EdgeStats, 0, len(edges))}
	for k, e := range edges {
		st.Edges = append(st.Edges, &api.EdgeStats{Source: k.src, Destination: k.dst,
			Requests: e.requests, Errors: e.errors, P99Ms: e.p99Ms()})
	}
	slices.SortFunc(st.Edges, func(x, y *api.EdgeStats) int {
		return cmp.Or(cmp.Compare(x.Source, y.Source), cmp.Compare(x.Destination, y.Destination))
	})
	return st
}

// Overflow is how many calls of the current window fell on edges beyond
// MaxEdges and were not counted.
func (a *Aggregator) Overflow() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.overflow
}

// p99Ms is the upper bound of the bucket holding the 99th percentile,
// capped by the slowest call.
func (e *edge) p99Ms() float64 {
	rank := (e.requests*99 + 99) / 100 // ceil(0.99 n): the call at that rank
	var seen uint64
	us := e.maxUS
	for i, n := range e.hist {
		seen += n
		if seen >= rank {
			if i < len(bounds) {
				us = min(bounds[i], e.maxUS)
			}
			break
		}
	}
	return float64(us) / 1000
}
