// Package resilience holds the L7 proxy's per-destination guards: circuit
// breakers, retry budgets and jittered backoff (DESIGN §3).
package resilience
