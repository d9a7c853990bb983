package resilience

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestBreaker(maxFailures int, reset time.Duration) (*Breaker, *fakeClock) {
	c := newFakeClock()
	b := NewBreaker(maxFailures, reset)
	b.now = c.Now
	return b, c
}

// fail makes n allowed calls that fail.
func fail(t *testing.T, b *Breaker, n int) {
	t.Helper()
	for range n {
		ok, trial := b.Allow()
		if !ok || trial {
			t.Fatalf("Allow = %v, %v while closed", ok, trial)
		}
		b.Done(false, false)
	}
}

func wantState(t *testing.T, b *Breaker, want string) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("State = %q, want %q", got, want)
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	b, _ := newTestBreaker(3, time.Second)
	fail(t, b, 2)
	wantState(t, b, "closed")
	fail(t, b, 1)
	wantState(t, b, "open")
	if ok, _ := b.Allow(); ok {
		t.Fatal("open breaker allowed a call")
	}
}

func TestBreakerSuccessResetsCount(t *testing.T) {
	b, _ := newTestBreaker(3, time.Second)
	for range 10 {
		fail(t, b, 2)
		b.Allow()
		b.Done(true, false)
	}
	wantState(t, b, "closed")
}

func TestBreakerNeverOpens(t *testing.T) {
	for _, max := range []int{0, -1} {
		b, _ := newTestBreaker(max, time.Second)
		fail(t, b, 1000)
		wantState(t, b, "closed")
	}
}

func TestBreakerTrialSuccessCloses(t *testing.T) {
	b, c := newTestBreaker(2, time.Second)
	fail(t, b, 2)
	c.Advance(999 * time.Millisecond)
	if ok, _ := b.Allow(); ok {
		t.Fatal("allowed before Reset")
	}
	c.Advance(time.Millisecond)
	ok, trial := b.Allow()
	if !ok || !trial {
		t.Fatalf("Allow after Reset = %v, %v, want a trial", ok, trial)
	}
	wantState(t, b, "half-open")
	if ok, _ := b.Allow(); ok {
		t.Fatal("second call allowed while the trial runs")
	}
	b.Done(true, true)
	wantState(t, b, "closed")
	// The failure count starts over after closing.
	fail(t, b, 1)
	wantState(t, b, "closed")
}

func TestBreakerTrialFailureReopens(t *testing.T) {
	b, c := newTestBreaker(2, time.Second)
	fail(t, b, 2)
	c.Advance(time.Second)
	b.Allow()
	c.Advance(300 * time.Millisecond)
	b.Done(false, true)
	wantState(t, b, "open")
	// A full new Reset from the trial's failure, not from the first opening.
	if got := b.RetryAfter(); got != time.Second {
		t.Fatalf("RetryAfter = %v, want 1s", got)
	}
	c.Advance(999 * time.Millisecond)
	if ok, _ := b.Allow(); ok {
		t.Fatal("allowed before the new Reset")
	}
	c.Advance(time.Millisecond)
	if ok, trial := b.Allow(); !ok || !trial {
		t.Fatal("no trial after the new Reset")
	}
}

func TestBreakerIgnoresStaleOutcomes(t *testing.T) {
	b, c := newTestBreaker(1, time.Second)
	b.Allow() // a call started while closed that reports late
	fail(t, b, 1)
	b.Done(true, false) // its success must not close an open breaker
	wantState(t, b, "open")
	c.Advance(time.Second)
	b.Allow()
	b.Done(false, false) // nor its failure re-open a half-open one
	wantState(t, b, "half-open")
	b.Done(true, true)
	wantState(t, b, "closed")
}

func TestBreakerLostTrialRecovers(t *testing.T) {
	b, c := newTestBreaker(1, time.Second)
	fail(t, b, 1)
	c.Advance(time.Second)
	if _, trial := b.Allow(); !trial {
		t.Fatal("no trial")
	}
	// The trial's caller vanishes without Done.
	c.Advance(999 * time.Millisecond)
	if ok, _ := b.Allow(); ok {
		t.Fatal("second trial before Reset")
	}
	c.Advance(time.Millisecond)
	if ok, trial := b.Allow(); !ok || !trial {
		t.Fatal("wedged: no new trial after a lost one")
	}
	b.Done(true, true)
	wantState(t, b, "closed")
}

func TestBreakerRetryAfter(t *testing.T) {
	b, c := newTestBreaker(1, 5*time.Second)
	if got := b.RetryAfter(); got != 0 {
		t.Fatalf("closed RetryAfter = %v", got)
	}
	fail(t, b, 1)
	c.Advance(2 * time.Second)
	if got := b.RetryAfter(); got != 3*time.Second {
		t.Fatalf("open RetryAfter = %v, want 3s", got)
	}
	c.Advance(3 * time.Second)
	if got := b.RetryAfter(); got != 0 {
		t.Fatalf("RetryAfter when the trial is due = %v", got)
	}
	b.Allow()
	if got := b.RetryAfter(); got != 0 {
		t.Fatalf("half-open RetryAfter = %v", got)
	}
}

// TestBreakerOneTrialUnderConcurrency runs many callers at the moment the
// open period ends; run it with -race.
func TestBreakerOneTrialUnderConcurrency(t *testing.T) {
	for round := range 50 {
		b, c := newTestBreaker(1, time.Second)
		fail(t, b, 1)
		c.Advance(time.Second)
		var allowed, trials atomic.Int32
		var start, wg sync.WaitGroup
		start.Add(1)
		for range 64 {
			wg.Go(func() {
				start.Wait()
				ok, trial := b.Allow()
				if ok {
					allowed.Add(1)
				}
				if trial {
					trials.Add(1)
				}
			})
		}
		start.Done()
		wg.Wait()
		if allowed.Load() != 1 || trials.Load() != 1 {
			t.Fatalf("round %d: %d allowed, %d trials, want 1 and 1",
				round, allowed.Load(), trials.Load())
		}
	}
}

// TestBreakerConcurrentClosedPath hammers the atomics from many goroutines;
// it exists for -race and to check that the breaker still opens.
func TestBreakerConcurrentClosedPath(t *testing.T) {
	b, _ := newTestBreaker(1000, time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if ok, trial := b.Allow(); ok {
					b.Done(true, trial)
				}
			}
		})
	}
	wg.Wait()
	wantState(t, b, "closed")
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if ok, trial := b.Allow(); ok {
					b.Done(false, trial)
				}
			}
		})
	}
	wg.Wait()
	if b.State() == "closed" {
		t.Fatal("8000 failures did not open the breaker")
	}
}

func TestBreakers(t *testing.T) {
	c := newFakeClock()
	s := NewBreakers(c.Now)
	var mu sync.Mutex
	var changes []string
	s.OnChange(func(key, state string) {
		mu.Lock()
		changes = append(changes, key+"="+state)
		mu.Unlock()
	})
	a := s.Get("ns/a", 1, time.Second)
	if s.Get("ns/a", 1, time.Second) != a {
		t.Fatal("same config gave a new breaker")
	}
	a.Allow()
	a.Done(false, false)
	s.Get("ns/b", 1, time.Second)
	if got := s.States(); len(got) != 1 || got["ns/a"] != "open" {
		t.Fatalf("States = %v", got)
	}
	c.Advance(time.Second) // the set's clock reaches its breakers
	if _, trial := a.Allow(); !trial {
		t.Fatal("no trial on the set's clock")
	}
	a2 := s.Get("ns/a", 2, time.Second)
	if a2 == a || a2.State() != "closed" {
		t.Fatal("config change did not recreate the breaker closed")
	}
	a.Done(false, true) // the replaced breaker's changes are not reported
	s.Get("ns/b", 1, time.Second).Allow()
	s.Get("ns/b", 1, time.Second).Done(false, false)
	s.Forget("ns/b")
	if got := s.States(); len(got) != 0 {
		t.Fatalf("States after recreate and Forget = %v", got)
	}
	want := []string{"ns/a=open", "ns/a=half-open", "ns/a=closed", "ns/b=open", "ns/b=closed"}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != len(want) {
		t.Fatalf("changes = %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes = %v, want %v", changes, want)
		}
	}
}

func TestNewBreakersNilClock(t *testing.T) {
	s := NewBreakers(nil)
	b := s.Get("k", 1, time.Hour)
	b.Allow()
	b.Done(false, false)
	if d := b.RetryAfter(); d <= 59*time.Minute || d > time.Hour {
		t.Fatalf("RetryAfter on time.Now = %v", d)
	}
}
