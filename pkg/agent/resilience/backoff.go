package resilience

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is exponential backoff with full jitter: a random duration in
// [0, min(max, base<<attempt)]; attempt 0 is the first retry. Full jitter
// (rather than base plus a little noise) spreads the retries of many clients
// that failed together, so they do not hit the backend again in lockstep.
// Negative attempts count as 0; base or max <= 0 gives 0.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	if base <= 0 || max <= 0 {
		return 0
	}
	if attempt < 0 {
		attempt = 0
	}
	ceil := max
	// Compare before shifting: base<<attempt overflows long before it
	// could matter.
	if attempt < 63 && base <= max>>attempt {
		ceil = base << attempt
	}
	if ceil == math.MaxInt64 {
		return time.Duration(rand.Int64N(math.MaxInt64))
	}
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}
