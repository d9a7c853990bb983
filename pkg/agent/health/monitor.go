package health

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Monitor probes one instance: at once, then every Check.Interval. An
// instance is not healthy until a probe passes. Run it once.
type Monitor struct {
	// Dialer reaches the instance. Nil: a net.Dialer.
	Dialer Dialer
	// Addr of the instance as the Dialer sees it, e.g. "127.0.0.1:7000".
	Addr string
	// Check is the check to run; once Run has started, change it only
	// with SetCheck.
	Check Check
	// OnChange is called from Run's goroutine with the first result and
	// then whenever healthy flips; err is the failing probe's error. Nil:
	// changes are only logged.
	OnChange func(healthy bool, err error)
	// Log receives state changes. Nil: discarded.
	Log *slog.Logger

	mu   sync.Mutex // mu guards Check once running, and wake
	wake chan struct{}
}

// SetCheck replaces the check, as when the service's manifest changes. The
// monitor starts its next round at once with it rather than waiting out
// the old interval.
func (m *Monitor) SetCheck(c Check) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Check = c
	select {
	case m.wakeLocked() <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func (m *Monitor) current() (Check, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Check, m.wakeLocked()
}

func (m *Monitor) wakeLocked() chan struct{} {
	if m.wake == nil {
		m.wake = make(chan struct{}, 1)
	}
	return m.wake
}

// Run probes until ctx ends. A probe cut short by ctx is not reported.
func (m *Monitor) Run(ctx context.Context) {
	log := m.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reported, healthy := false, false
	for {
		c, wake := m.current()
		err := Probe(ctx, m.Dialer, m.Addr, c)
		if ctx.Err() != nil {
			return
		}
		if ok := err == nil; !reported || ok != healthy {
			reported, healthy = true, ok
			log.Info("instance health", "addr", m.Addr, "healthy", ok, "err", err)
			if m.OnChange != nil {
				m.OnChange(ok, err)
			}
		}
		t := time.NewTimer(c.interval())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}
