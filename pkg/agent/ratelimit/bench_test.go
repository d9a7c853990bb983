package ratelimit

import (
	"context"
	"testing"
	"time"
)

// BenchmarkWaitUnlimited is the cost for a service without a limit.
func BenchmarkWaitUnlimited(b *testing.B) {
	l := New(0, 100*time.Millisecond)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l.Wait(ctx)
	}
}

// BenchmarkWaitAdmitted is the cost of a request under its limit: the rate
// is high enough that a token is always there.
func BenchmarkWaitAdmitted(b *testing.B) {
	l := New(1e9, 100*time.Millisecond)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, _ := l.Wait(ctx); !ok {
			b.Fatal("refused")
		}
	}
}

func BenchmarkWaitAdmittedParallel(b *testing.B) {
	l := New(1e9, 100*time.Millisecond)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			l.Wait(ctx)
		}
	})
}

// BenchmarkWaitRefused is the cost of turning excess away.
func BenchmarkWaitRefused(b *testing.B) {
	l := New(1e-3, 0)
	ctx := context.Background()
	l.Wait(ctx)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, _ := l.Wait(ctx); ok {
			b.Fatal("admitted")
		}
	}
}

// BenchmarkSetLimiter is the per-request lookup when nothing changed.
func BenchmarkSetLimiter(b *testing.B) {
	s := NewSet(100 * time.Millisecond)
	b.ReportAllocs()
	for b.Loop() {
		s.Limiter("ns/svc", 300, 3)
	}
}
