package resilience

import (
	"sync"
	"sync/atomic"
	"time"
)

const (
	stateClosed int32 = iota
	stateOpen
	stateHalfOpen
)

var stateNames = [...]string{"closed", "open", "half-open"}

// Breaker is a per-destination circuit breaker (DESIGN §3): MaxFailures
// consecutive failures open it for Reset; while open Allow refuses; after
// Reset exactly one caller gets a trial (half-open); the trial's success
// closes it, its failure re-opens it for another Reset.
//
// The closed path is two atomic operations and allocates nothing, because
// every proxied request goes through it; the rare open and half-open paths
// take a mutex, which keeps the trial hand-out obviously exclusive.
//
// A trial is identified only by the bool the caller hands back, so a late
// report from a trial that was given up on still decides a half-open breaker.
type Breaker struct {
	maxFailures int64
	reset       time.Duration
	now         func() time.Time // injectable for tests
	onChange    func(state string)

	state    atomic.Int32 // stateClosed, stateOpen or stateHalfOpen
	failures atomic.Int64 // consecutive failures while closed

	mu sync.Mutex // guards the fields below and every transition
	// until is when the next trial may go: the end of the open period, or,
	// while half-open, the moment an unreported trial is given up on.
	until time.Time
}

// NewBreaker returns a closed breaker. maxFailures <= 0 means it never opens.
func NewBreaker(maxFailures int, reset time.Duration) *Breaker {
	return &Breaker{maxFailures: int64(maxFailures), reset: reset, now: time.Now}
}

// Allow reports whether a call may go. trial is true for the single call
// that tests a half-open breaker; its caller must pass it back to Done.
func (b *Breaker) Allow() (ok, trial bool) {
	if b.state.Load() == stateClosed {
		return true, false
	}
	b.mu.Lock()
	if b.state.Load() == stateClosed {
		b.mu.Unlock()
		return true, false
	}
	now := b.now()
	if now.Before(b.until) {
		b.mu.Unlock()
		return false, false
	}
	// Open period over, or the previous trial never reported: one trial,
	// which itself is given up on after another Reset.
	changed := b.state.Swap(stateHalfOpen) != stateHalfOpen
	b.until = now.Add(b.reset)
	b.mu.Unlock()
	if changed {
		b.notify(stateHalfOpen)
	}
	return true, true
}

// Done reports the outcome of a call that Allow let through. A trial's
// outcome decides a half-open breaker; other outcomes count only while
// closed, since they may belong to calls started before it opened.
func (b *Breaker) Done(success, trial bool) {
	if b.maxFailures <= 0 {
		return
	}
	if trial && b.state.Load() == stateHalfOpen {
		b.endTrial(success)
		return
	}
	if b.state.Load() != stateClosed {
		return
	}
	if success {
		// Load first: a store on every success would bounce the cache line
		// between cores for nothing.
		if b.failures.Load() != 0 {
			b.failures.Store(0)
		}
		return
	}
	if b.failures.Add(1) < b.maxFailures {
		return
	}
	b.mu.Lock()
	opened := b.state.Load() == stateClosed
	if opened {
		b.openLocked()
	}
	b.mu.Unlock()
	if opened {
		b.notify(stateOpen)
	}
}

func (b *Breaker) endTrial(success bool) {
	b.mu.Lock()
	if b.state.Load() != stateHalfOpen {
		b.mu.Unlock()
		return
	}
	next := stateOpen
	if success {
		next = stateClosed
		b.failures.Store(0) // before the state, so the closed path starts at 0
		b.state.Store(stateClosed)
	} else {
		b.openLocked()
	}
	b.mu.Unlock()
	b.notify(next)
}

// openLocked needs b.mu held.
func (b *Breaker) openLocked() {
	b.until = b.now().Add(b.reset)
	b.state.Store(stateOpen)
}

func (b *Breaker) notify(state int32) {
	if b.onChange != nil {
		b.onChange(stateNames[state])
	}
}

// State returns "closed", "open" or "half-open".
func (b *Breaker) State() string {
	return stateNames[b.state.Load()]
}

// RetryAfter returns the time left until the trial while open, for a
// Retry-After header; 0 when closed or half-open.
func (b *Breaker) RetryAfter() time.Duration {
	if b.state.Load() != stateOpen {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() != stateOpen {
		return 0
	}
	return max(0, b.until.Sub(b.now()))
}
