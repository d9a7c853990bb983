package ratelimit

import (
	"sync"
	"time"
)

// Set holds the limiters of a node's local services. Each instance enforces
// its share of the service's limit, so the service as a whole gets about
// totalRPS without the nodes talking to each other; keys are bounded by the
// registry, and Forget drops deleted services.
type Set struct {
	maxWait time.Duration
	now     func() time.Time                                    // injectable for tests
	after   func(time.Duration) (<-chan time.Time, func() bool) // likewise

	mu sync.RWMutex // guards m
	m  map[string]*Limiter
}

// NewSet returns an empty set whose limiters queue for at most maxWait.
func NewSet(maxWait time.Duration) *Set {
	return &Set{maxWait: maxWait, now: time.Now, after: realAfter, m: make(map[string]*Limiter)}
}

// Limiter returns key's limiter with rate totalRPS/readyInstances
// (readyInstances < 1 counts as 1), creating it or re-rating it in place.
// It is cheap when nothing changed, so callers may call it per request.
func (s *Set) Limiter(key string, totalRPS float64, readyInstances int) *Limiter {
	rps := totalRPS / float64(max(readyInstances, 1))
	if rps <= 0 {
		rps = 0 // the limiter's own spelling of unlimited, for the compare
	}
	s.mu.RLock()
	l := s.m[key]
	s.mu.RUnlock()
	if l == nil {
		s.mu.Lock()
		if l = s.m[key]; l == nil {
			// Rated before it is published, so no caller sees it unlimited.
			l = newLimiter(rps, s.maxWait, s.now, s.after)
			s.m[key] = l
		}
		s.mu.Unlock()
	}
	if l.rate() != rps {
		l.SetRate(rps)
	}
	return l
}

// Forget drops key's limiter, for a deleted service.
func (s *Set) Forget(key string) {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}
