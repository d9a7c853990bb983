package resilience

import (
	"testing"
	"time"
)

// BenchmarkBreakerClosed is the cost every proxied request pays.
func BenchmarkBreakerClosed(b *testing.B) {
	br := NewBreaker(5, time.Second)
	b.ReportAllocs()
	for b.Loop() {
		ok, trial := br.Allow()
		br.Done(ok, trial)
	}
}

func BenchmarkBreakerClosedParallel(b *testing.B) {
	br := NewBreaker(5, time.Second)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ok, trial := br.Allow()
			br.Done(ok, trial)
		}
	})
}

// BenchmarkBreakerOpen is the refusal path during an outage.
func BenchmarkBreakerOpen(b *testing.B) {
	br := NewBreaker(1, time.Hour)
	br.Done(false, false)
	b.ReportAllocs()
	for b.Loop() {
		br.Allow()
	}
}

func BenchmarkBudget(b *testing.B) {
	bu := NewBudget(0.2, 10, 10*time.Second)
	b.ReportAllocs()
	for b.Loop() {
		bu.Deposit()
		bu.Withdraw()
	}
}
