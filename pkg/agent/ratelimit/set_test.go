package ratelimit

import (
	"context"
	"sync"
	"testing"
	"time"
)

func newTestSet(maxWait time.Duration, c *fakeClock) *Set {
	s := NewSet(maxWait)
	s.now, s.after = c.Now, c.After
	return s
}

func TestSetSplits(t *testing.T) {
	s := newTestSet(100*time.Millisecond, newFakeClock(epoch, false))
	l := s.Limiter("ns/a", 90, 3)
	if got := l.rate(); got != 30 {
		t.Fatalf("rate = %v, want 90/3", got)
	}
	if s.Limiter("ns/a", 90, 3) != l {
		t.Fatal("same key gave a new limiter")
	}
	for _, tc := range []struct {
		total float64
		ready int
		want  float64
	}{{90, 2, 45}, {90, 0, 90}, {90, -4, 90}, {0, 3, 0}, {-1, 3, 0}, {60, 4, 15}} {
		if s.Limiter("ns/a", tc.total, tc.ready) != l {
			t.Fatal("re-rating replaced the limiter")
		}
		if got := l.rate(); got != tc.want {
			t.Fatalf("Limiter(%v, %d): rate %v, want %v", tc.total, tc.ready, got, tc.want)
		}
	}
	if got := l.unlimited.Load(); got {
		t.Fatal("limiter unlimited after a finite rate")
	}
	if s.Limiter("ns/b", 10, 1) == l {
		t.Fatal("two keys share a limiter")
	}
	s.Forget("ns/a")
	if s.Limiter("ns/a", 60, 4) == l {
		t.Fatal("Forget kept the limiter")
	}
	if len(s.m) != 2 {
		t.Fatalf("%d limiters, want 2", len(s.m))
	}
}

// TestSetServiceRate: three instances, each on its own node's Set, admit
// the service's total between them.
func TestSetServiceRate(t *testing.T) {
	const total, span = 90.0, 10 * time.Second
	admitted := 0
	for range 3 {
		c := newFakeClock(epoch, true)
		l := newTestSet(100*time.Millisecond, c).Limiter("ns/svc", total, 3)
		for c.Now().Before(epoch.Add(span)) {
			if _, ok, _ := l.Wait(context.Background()); ok {
				admitted++
			} else {
				c.Advance(time.Millisecond)
			}
		}
	}
	target := total * span.Seconds()
	if got := float64(admitted); got < target*0.9 || got > target*1.1 {
		t.Fatalf("%d admitted across 3 instances in %v, want %v ±10%%", admitted, span, target)
	}
}

// TestSetConcurrent is for -race: per-request lookups while the rate moves.
func TestSetConcurrent(t *testing.T) {
	s := newTestSet(0, newFakeClock(epoch, false))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 500 {
				s.Limiter("ns/svc", 100, 1+(i+j)%3).Wait(context.Background())
				if j%100 == 0 {
					s.Forget("ns/svc")
				}
			}
		})
	}
	wg.Wait()
}
