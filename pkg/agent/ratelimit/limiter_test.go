package ratelimit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestLimiter(rps float64, maxWait time.Duration, auto bool) (*Limiter, *fakeClock) {
	c := newFakeClock(epoch, auto)
	return c.install(New(rps, maxWait)), c
}

func tokens(l *Limiter, c *fakeClock) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lim.TokensAt(c.Now())
}

func waiting(l *Limiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiting
}

// admitNow takes n tokens that must be there.
func admitNow(t *testing.T, l *Limiter, n int) {
	t.Helper()
	for i := range n {
		if w, ok, _ := l.Wait(context.Background()); !ok || w != 0 {
			t.Fatalf("request %d: waited %v, ok %v; want admitted at once", i, w, ok)
		}
	}
}

// eventually polls cond, for goroutines parked on the fake clock.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func TestBucketSize(t *testing.T) {
	for _, tc := range []struct {
		rps     float64
		maxWait time.Duration
		want    int
	}{
		{100, 100 * time.Millisecond, 10}, {1000, 100 * time.Millisecond, 100},
		{15, 100 * time.Millisecond, 2}, {1, 100 * time.Millisecond, 1},
		{50, 0, 1}, {0.01, time.Second, 1}, {1e15, time.Second, maxBurst},
	} {
		if got := New(tc.rps, tc.maxWait).lim.Burst(); got != tc.want {
			t.Errorf("burst(%v rps, %v) = %d, want %d", tc.rps, tc.maxWait, got, tc.want)
		}
	}
}

func TestUnlimited(t *testing.T) {
	for _, rps := range []float64{0, -5, math.NaN()} {
		l, _ := newTestLimiter(rps, 100*time.Millisecond, false)
		for range 1000 {
			if w, ok, ra := l.Wait(context.Background()); !ok || w != 0 || ra != 0 {
				t.Fatalf("unlimited (%v) Wait = %v, %v, %v", rps, w, ok, ra)
			}
		}
	}
	l, c := newTestLimiter(0, 100*time.Millisecond, false)
	l.SetRate(5) // from unlimited: a full bucket of max(1, 0.5) = 1
	admitNow(t, l, 1)
	if _, ok, ra := l.Wait(context.Background()); ok || ra != 200*time.Millisecond {
		t.Fatalf("over the rate: ok %v, retryAfter %v; want refused, 200ms", ok, ra)
	}
	if !near(tokens(l, c), 0) {
		t.Fatalf("refusal consumed a token: %v left", tokens(l, c))
	}
	l.SetRate(0)
	admitNow(t, l, 100)
}

// TestAdmittedRate simulates a greedy client for 10s of fake time: the
// admitted rate must be the target, queueing included.
func TestAdmittedRate(t *testing.T) {
	for _, tc := range []struct {
		rps     float64
		maxWait time.Duration
	}{{100, 100 * time.Millisecond}, {37.5, 0}, {1000, 50 * time.Millisecond}, {2, time.Second}} {
		l, c := newTestLimiter(tc.rps, tc.maxWait, true)
		const span = 10 * time.Second
		end := epoch.Add(span)
		admitted, refused := 0, 0
		for c.Now().Before(end) {
			w, ok, ra := l.Wait(context.Background())
			switch {
			case !ok:
				refused++
				if ra <= 0 {
					t.Fatalf("refused with retryAfter %v", ra)
				}
				c.Advance(time.Millisecond)
			case w > tc.maxWait:
				t.Fatalf("waited %v, more than %v", w, tc.maxWait)
			default:
				admitted++
			}
		}
		// A full bucket, then the rate.
		target := tc.rps*span.Seconds() + float64(l.lim.Burst())
		t.Logf("%v rps, maxWait %v: %d admitted, %d refused, target %v",
			tc.rps, tc.maxWait, admitted, refused, target)
		if got := float64(admitted); got < target*0.9 || got > target*1.1 {
			t.Errorf("%v rps: %d admitted in %v, want %v ±10%% (%d refused)",
				tc.rps, admitted, span, target, refused)
		}
	}
}

// TestQueueBounded: 20 requests arrive at once on an empty bucket; those
// whose turn is within maxWait queue, the rest are refused at once without
// taking a token.
func TestQueueBounded(t *testing.T) {
	l, c := newTestLimiter(100, 100*time.Millisecond, false)
	admitNow(t, l, 10) // the full bucket
	var refused atomic.Int32
	waits := make(chan time.Duration, 20)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			w, ok, ra := l.Wait(context.Background())
			if !ok {
				if ra <= 100*time.Millisecond {
					t.Errorf("refused with retryAfter %v, want > maxWait", ra)
				}
				refused.Add(1)
				return
			}
			waits <- w
		})
	}
	eventually(t, "20 requests to queue or be refused", func() bool {
		return int(refused.Load())+waiting(l) == 20
	})
	if n := waiting(l); n != 10 {
		t.Fatalf("%d waiting, want 10 (100ms of 100 rps)", n)
	}
	if got := tokens(l, c); !near(got, -10) {
		t.Fatalf("tokens = %v, want -10: refusals must not take tokens", got)
	}
	c.Advance(100 * time.Millisecond)
	wg.Wait()
	close(waits)
	seen := map[time.Duration]bool{}
	for w := range waits {
		if w <= 0 || w > 100*time.Millisecond || seen[w] {
			t.Fatalf("waited %v (seen before: %v)", w, seen[w])
		}
		seen[w] = true
	}
	if got := tokens(l, c); !near(got, 0) {
		t.Fatalf("tokens after the queue drained = %v, want 0", got)
	}
}

// TestWaiterCap shows the waiter count bounds the queue by itself, even
// where the maxWait check would still let a request in.
func TestWaiterCap(t *testing.T) {
	l, c := newTestLimiter(100, 100*time.Millisecond, false)
	l.mu.Lock()
	l.maxWaiters = 3
	l.mu.Unlock()
	admitNow(t, l, 10)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { l.Wait(context.Background()) })
	}
	eventually(t, "3 waiters", func() bool { return waiting(l) == 3 })
	if _, ok, ra := l.Wait(context.Background()); ok || ra != 40*time.Millisecond {
		t.Fatalf("4th waiter: ok %v, retryAfter %v; want refused, 40ms", ok, ra)
	}
	if got := tokens(l, c); !near(got, -3) {
		t.Fatalf("tokens = %v, want -3", got)
	}
	c.Advance(30 * time.Millisecond)
	wg.Wait()
}

func TestRetryAfter(t *testing.T) {
	l, c := newTestLimiter(10, 0, false)
	admitNow(t, l, 1)
	if _, ok, ra := l.Wait(context.Background()); ok || ra != 100*time.Millisecond {
		t.Fatalf("ok %v, retryAfter %v; want refused, 100ms", ok, ra)
	}
	c.Advance(40 * time.Millisecond)
	if _, ok, ra := l.Wait(context.Background()); ok || ra != 60*time.Millisecond {
		t.Fatalf("ok %v, retryAfter %v; want refused, 60ms", ok, ra)
	}
	c.Advance(60 * time.Millisecond)
	admitNow(t, l, 1)
}

func TestSetRateKeepsState(t *testing.T) {
	l, c := newTestLimiter(10, 100*time.Millisecond, false)
	admitNow(t, l, 1)
	l.SetRate(20)
	if got := tokens(l, c); !near(got, 0) {
		t.Fatalf("re-rating refilled the bucket: %v tokens", got)
	}
	c.Advance(50 * time.Millisecond)
	if got := tokens(l, c); !near(got, 1) {
		t.Fatalf("tokens at 20 rps after 50ms = %v, want 1", got)
	}
	c.Advance(time.Second)
	if got := tokens(l, c); !near(got, 2) {
		t.Fatalf("tokens = %v, want the new bucket size 2", got)
	}
	l.SetRate(10)
	if got := tokens(l, c); !near(got, 1) {
		t.Fatalf("tokens after shrinking = %v, want 1", got)
	}
	l.SetRate(0)
	c.Advance(10 * time.Millisecond)
	l.SetRate(10) // back from unlimited: the kept bucket, not NaN
	if got := tokens(l, c); !near(got, 1) {
		t.Fatalf("tokens after an unlimited spell = %v, want 1", got)
	}
}
