package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// maxBurst caps the bucket and the queue for absurd rates, so int
// conversions cannot overflow.
const maxBurst = 1 << 30

// Limiter is a token bucket (golang.org/x/time/rate) with a short bounded
// queue in front: a request waits at most maxWait for a token, and is
// refused at once, without taking one, when it would wait longer.
//
// The bucket holds max(1, ceil(rps*maxWait)) tokens: what the queue would
// let through in one maxWait anyway, so a burst after an idle spell passes
// without queueing, the long-run rate stays rps, and at least one request
// can always pass however low the rate.
type Limiter struct {
	maxWait   time.Duration
	now       func() time.Time                                    // injectable for tests
	after     func(time.Duration) (<-chan time.Time, func() bool) // likewise
	unlimited atomic.Bool                                         // the fast path reads only this
	rps       atomic.Uint64                                       // float64 bits; 0 when unlimited

	// mu guards the fields below and makes check-then-reserve atomic: a
	// refused request must not touch the bucket, and without it a
	// concurrent reservation could slip between the check and ours.
	mu         sync.Mutex
	lim        *rate.Limiter // nil until the first finite rate
	maxWaiters int
	waiting    int
}

// New returns a limiter admitting rps requests per second, each waiting at
// most maxWait for its turn; rps <= 0 means unlimited.
func New(rps float64, maxWait time.Duration) *Limiter {
	return newLimiter(rps, maxWait, time.Now, realAfter)
}

func newLimiter(rps float64, maxWait time.Duration, now func() time.Time,
	after func(time.Duration) (<-chan time.Time, func() bool)) *Limiter {
	l := &Limiter{maxWait: max(maxWait, 0), now: now, after: after}
	l.unlimited.Store(true)
	l.SetRate(rps)
	return l
}

func realAfter(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// SetRate changes the rate live. The bucket keeps its tokens (capped to the
// new size), so re-rating cannot be used to refill it; rps <= 0 means
// unlimited.
func (l *Limiter) SetRate(rps float64) {
	if rps <= 0 || math.IsNaN(rps) {
		rps = 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rps.Store(math.Float64bits(rps))
	if rps == 0 {
		// The bucket is kept but ignored: x/time/rate's Inf limit turns the
		// token count into NaN on the way back to a finite rate.
		l.unlimited.Store(true)
		return
	}
	burst := bucketSize(rps, l.maxWait)
	// One more waiter than the bucket holds: the maxWait check already
	// admits no more than that, this keeps memory bounded whatever the
	// clock or a re-rating does.
	l.maxWaiters = burst + 1
	if l.lim == nil {
		l.lim = rate.NewLimiter(rate.Limit(rps), burst) // starts full
	} else {
		t := l.now()
		l.lim.SetLimitAt(t, rate.Limit(rps))
		l.lim.SetBurstAt(t, burst)
	}
	l.unlimited.Store(false)
}

func bucketSize(rps float64, maxWait time.Duration) int {
	// rps*ns/1e9 rather than rps*Seconds(): 100*0.1 is not exactly 10; the
	// epsilon absorbs what rounding remains.
	n := math.Ceil(rps*float64(maxWait)/float64(time.Second) - 1e-9)
	return int(min(max(n, 1), maxBurst))
}

// rate returns the current rate, 0 when unlimited.
func (l *Limiter) rate() float64 { return math.Float64frombits(l.rps.Load()) }

// Wait admits a request: it returns at once when a token is there, waits
// up to maxWait when one comes within that (waited > 0), or refuses with
// the time after which a retry would likely be admitted (> 0). A request
// whose ctx deadline would pass before its turn is refused without waiting;
// when ctx ends during the wait it gives its token back and returns ok
// false with retryAfter 0. ctx is not consulted when no wait is needed.
func (l *Limiter) Wait(ctx context.Context) (waited time.Duration, ok bool, retryAfter time.Duration) {
	if l.unlimited.Load() {
		return 0, true, 0
	}
	t := l.now()
	l.mu.Lock()
	if l.unlimited.Load() || l.lim.AllowN(t, 1) {
		l.mu.Unlock()
		return 0, true, 0
	}
	if ctx.Err() != nil {
		l.mu.Unlock()
		return 0, false, 0
	}
	// Time until this request's token, behind the ones already reserved.
	delay := time.Duration((1 - l.lim.TokensAt(t)) / l.rate() * float64(time.Second))
	if delay > l.maxWait || l.waiting >= l.maxWaiters || deadlineBefore(ctx, t.Add(delay)) {
		l.mu.Unlock()
		return 0, false, max(delay, time.Nanosecond)
	}
	r := l.lim.ReserveN(t, 1)
	delay = r.DelayFrom(t)
	if delay == 0 {
		l.mu.Unlock()
		return 0, true, 0
	}
	l.waiting++
	l.mu.Unlock()

	ch, stop := l.after(delay)
	select {
	case <-ch:
		ok = true
	case <-ctx.Done():
		stop()
	}
	l.mu.Lock()
	l.waiting--
	if !ok {
		r.CancelAt(l.now()) // lets the requests queued behind go sooner
	}
	l.mu.Unlock()
	if !ok {
		return 0, false, 0
	}
	return delay, true, 0
}

func deadlineBefore(ctx context.Context, t time.Time) bool {
	d, ok := ctx.Deadline()
	return ok && d.Before(t)
}
