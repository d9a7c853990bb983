package resilience

import (
	"math"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	const base, max = 10 * time.Millisecond, time.Second
	for _, tc := range []struct {
		attempt int
		ceil    time.Duration
	}{
		{-3, base}, {0, base}, {1, 20 * time.Millisecond}, {3, 80 * time.Millisecond},
		{6, 640 * time.Millisecond}, {7, max}, {62, max}, {63, max}, {1 << 30, max},
	} {
		var hi time.Duration
		for range 2000 {
			d := Backoff(tc.attempt, base, max)
			if d < 0 || d > tc.ceil {
				t.Fatalf("Backoff(%d) = %v, outside [0, %v]", tc.attempt, d, tc.ceil)
			}
			hi = maxDur(hi, d)
		}
		if hi < tc.ceil*9/10 {
			t.Fatalf("Backoff(%d) never came near its ceiling %v (max %v)", tc.attempt, tc.ceil, hi)
		}
	}
	if d := Backoff(0, math.MaxInt64, math.MaxInt64); d < 0 {
		t.Fatalf("Backoff at MaxInt64 = %v", d)
	}
	if Backoff(3, 0, time.Second) != 0 || Backoff(3, time.Second, 0) != 0 {
		t.Fatal("zero base or max gave a non-zero backoff")
	}
}

// TestBackoffJitter checks full jitter: uniform over [0, ceil], not clustered
// at the ceiling.
func TestBackoffJitter(t *testing.T) {
	const n, buckets = 20000, 10
	ceil := 80 * time.Millisecond
	var count [buckets]int
	var sum time.Duration
	for range n {
		d := Backoff(3, 10*time.Millisecond, time.Second)
		sum += d
		count[min(int(d*buckets/ceil), buckets-1)]++
	}
	mean := sum / n
	if mean < 38*time.Millisecond || mean > 42*time.Millisecond {
		t.Fatalf("mean %v, want about 40ms", mean)
	}
	for i, c := range count {
		if c < n/buckets*8/10 || c > n/buckets*12/10 {
			t.Fatalf("bucket %d holds %d of %d: not uniform (%v)", i, c, n, count)
		}
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}
