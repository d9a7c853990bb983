package metrics

import (
	"sort"
	"sync"
	"time"
)

// rateWindow is how far back TopDestinations looks, in one-second slots.
const rateWindow = 60

// DestinationRate is the traffic this node's workloads sent to one
// destination over the last minute (reporter "source"): errors are 5xx
// answers, the proxy's own included (no endpoint, circuit open).
type DestinationRate struct {
	Service     string  `json:"service"` // "ns/svc"
	Requests    uint64  `json:"requests"`
	Errors      uint64  `json:"errors"`
	RequestRate float64 `json:"requests_per_second"`
	ErrorRate   float64 `json:"errors_per_second"`
}

// rates keeps a one-minute ring of per-second counts per destination.
type rates struct {
	mu sync.Mutex // guards m
	m  map[string]*ring
}

type ring struct {
	sec       [rateWindow]int64 // the unix second each slot counts
	req, errs [rateWindow]uint64
}

func (r *rates) init() { r.m = map[string]*ring{} }

func (r *rates) record(dst string, failed bool, now time.Time) {
	s := now.Unix()
	i := s % rateWindow
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.m[dst]
	if w == nil {
		w = &ring{}
		r.m[dst] = w
	}
	if w.sec[i] != s {
		w.sec[i], w.req[i], w.errs[i] = s, 0, 0
	}
	w.req[i]++
	if failed {
		w.errs[i]++
	}
}

// top sums each ring over the window ending at now, drops destinations
// idle for the whole window, and returns the n busiest (all if n <= 0).
func (r *rates) top(n int, now time.Time) []DestinationRate {
	s := now.Unix()
	r.mu.Lock()
	out := make([]DestinationRate, 0, len(r.m))
	for dst, w := range r.m {
		d := DestinationRate{Service: dst}
		for i := range w.sec {
			if s-w.sec[i] < rateWindow {
				d.Requests += w.req[i]
				d.Errors += w.errs[i]
			}
		}
		if d.Requests == 0 {
			delete(r.m, dst) // bounded by the destinations called in the last minute
			continue
		}
		d.RequestRate, d.ErrorRate = float64(d.Requests)/rateWindow, float64(d.Errors)/rateWindow
		out = append(out, d)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Requests != out[j].Requests {
			return out[i].Requests > out[j].Requests
		}
		if out[i].Errors != out[j].Errors {
			return out[i].Errors > out[j].Errors
		}
		return out[i].Service < out[j].Service
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// TopDestinations returns the n destinations this node's workloads called
// most over the last minute, busiest first, with their error counts.
func (m *Metrics) TopDestinations(n int) []DestinationRate {
	if m == nil {
		return nil
	}
	return m.rates.top(n, time.Now())
}
