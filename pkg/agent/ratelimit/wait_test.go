package ratelimit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestContext(t *testing.T) {
	l, c := newTestLimiter(100, 100*time.Millisecond, false)
	admitNow(t, l, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() {
		w, ok, ra := l.Wait(ctx)
		done <- w == 0 && !ok && ra == 0
	}()
	eventually(t, "a waiter", func() bool { return waiting(l) == 1 })
	cancel()
	if !<-done {
		t.Fatal("a cancelled wait did not return 0, false, 0")
	}
	if got := tokens(l, c); !near(got, 0) || waiting(l) != 0 {
		t.Fatalf("after cancel: tokens %v, %d waiting; want 0, 0", got, waiting(l))
	}
	// Already done: refused without reserving.
	if w, ok, ra := l.Wait(ctx); w != 0 || ok || ra != 0 || !near(tokens(l, c), 0) {
		t.Fatalf("done ctx: %v, %v, %v", w, ok, ra)
	}
}

func TestContextDeadline(t *testing.T) {
	c := newFakeClock(time.Now(), false) // deadlines are on the real clock
	l := c.install(New(1, 2*time.Second))
	admitNow(t, l, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, ok, ra := l.Wait(ctx); ok || ra != time.Second {
		t.Fatalf("ok %v, retryAfter %v; want refused at once, 1s", ok, ra)
	}
	if got := tokens(l, c); !near(got, 0) {
		t.Fatalf("tokens = %v, want 0", got)
	}
}

// TestRealClock runs the production timers for a second under contention.
func TestRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a second")
	}
	const rps, span = 200, time.Second
	l := New(rps, 100*time.Millisecond)
	var admitted atomic.Int64
	end := time.Now().Add(span)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for time.Now().Before(end) {
				_, ok, _ := l.Wait(context.Background())
				if ok && !time.Now().After(end) { // not the queue's tail past the end
					admitted.Add(1)
				} else if !ok {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	// A full bucket of 20 plus rps for the span.
	target := float64(rps)*span.Seconds() + 20
	t.Logf("%d admitted in %v, target %v", admitted.Load(), span, target)
	if got := float64(admitted.Load()); got < target*0.9 || got > target*1.1 {
		t.Fatalf("%v admitted in %v, want %v ±10%%", got, span, target)
	}
}
