package ratelimit

import (
	"sync"
	"time"
)

// fakeClock drives a Limiter without real time. With auto set, a timer
// jumps the clock to its deadline and fires at once, which turns a single
// goroutine into a simulation of a client that waits its turn.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	auto   bool
	timers map[*fakeTimer]bool
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(start time.Time, auto bool) *fakeClock {
	return &fakeClock{t: start, auto: auto, timers: make(map[*fakeTimer]bool)}
}

// install makes l run on c.
func (c *fakeClock) install(l *Limiter) *Limiter {
	l.now, l.after = c.Now, c.After
	return l
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{at: c.t.Add(d), ch: make(chan time.Time, 1)}
	if c.auto {
		c.t = ft.at
	}
	if !ft.at.After(c.t) {
		ft.ch <- c.t
	} else {
		c.timers[ft] = true
	}
	stop := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		pending := c.timers[ft]
		delete(c.timers, ft)
		return pending
	}
	return ft.ch, stop
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	for ft := range c.timers {
		if !ft.at.After(c.t) {
			ft.ch <- c.t
			delete(c.timers, ft)
		}
	}
}
