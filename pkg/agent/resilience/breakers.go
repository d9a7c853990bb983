package resilience

import (
	"sync"
	"time"
)

// Breakers holds one Breaker per key (destination service "ns/svc"). A
// breaker is recreated, closed, when its config changes, so a new limit takes
// effect at once. Keys are bounded by the registry; Forget drops deleted ones.
type Breakers struct {
	now      func() time.Time
	onChange func(key, state string)

	mu sync.RWMutex // guards m
	m  map[string]*breakerEntry
}

type breakerEntry struct {
	b           *Breaker
	maxFailures int
	reset       time.Duration
}

// NewBreakers returns an empty set; a nil clock means time.Now.
func NewBreakers(clock func() time.Time) *Breakers {
	if clock == nil {
		clock = time.Now
	}
	return &Breakers{now: clock, m: make(map[string]*breakerEntry)}
}

// OnChange sets f to be called, outside any lock, when a breaker in the set
// changes state (for metrics). Set it before the first Get.
func (s *Breakers) OnChange(f func(key, state string)) { s.onChange = f }

// Get returns the breaker for key, creating it, or recreating it when
// maxFailures or reset differ from the ones it was made with.
func (s *Breakers) Get(key string, maxFailures int, reset time.Duration) *Breaker {
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e != nil && e.maxFailures == maxFailures && e.reset == reset {
		return e.b
	}
	s.mu.Lock()
	e = s.m[key]
	if e != nil && e.maxFailures == maxFailures && e.reset == reset {
		s.mu.Unlock()
		return e.b
	}
	b := NewBreaker(maxFailures, reset)
	b.now = s.now
	b.onChange = func(state string) { s.forward(key, b, state) }
	s.m[key] = &breakerEntry{b: b, maxFailures: maxFailures, reset: reset}
	s.mu.Unlock()
	if e != nil {
		s.reportClosed(key, e.b)
	}
	return b
}

// Forget drops key's breaker, for a deleted service.
func (s *Breakers) Forget(key string) {
	s.mu.Lock()
	e := s.m[key]
	delete(s.m, key)
	s.mu.Unlock()
	if e != nil {
		s.reportClosed(key, e.b)
	}
}

// States returns the state of every breaker that is not closed.
func (s *Breakers) States() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]string)
	for k, e := range s.m {
		if st := e.b.State(); st != "closed" {
			out[k] = st
		}
	}
	return out
}

// forward passes on a change only from the breaker currently held for key:
// callers may still hold a replaced one, and its changes would mislead
// metrics about the live one.
func (s *Breakers) forward(key string, b *Breaker, state string) {
	if s.onChange == nil {
		return
	}
	s.mu.RLock()
	e := s.m[key]
	s.mu.RUnlock()
	if e != nil && e.b == b {
		s.onChange(key, state)
	}
}

// reportClosed tells metrics that a replaced or forgotten breaker that was
// not closed no longer stands for key.
func (s *Breakers) reportClosed(key string, old *Breaker) {
	if s.onChange != nil && old.State() != "closed" {
		s.onChange(key, "closed")
	}
}
