package resilience

import (
	"testing"
	"time"
)

func newTestBudget(ratio, minPerSecond float64, ttl time.Duration) (*Budget, *fakeClock) {
	c := newFakeClock()
	b := NewBudget(ratio, minPerSecond, ttl)
	b.now = c.Now
	return b, c
}

func drain(b *Budget) int {
	n := 0
	for b.Withdraw() {
		n++
		if n > 1e6 {
			panic("budget never runs out")
		}
	}
	return n
}

// TestBudgetOutage: 100 requests, all failing, every one retried as often as
// the budget lets: at most 20% of them plus the floor.
func TestBudgetOutage(t *testing.T) {
	b, c := newTestBudget(0.2, 10, 10*time.Second)
	retries := 0
	for range 100 {
		b.Deposit()
		for b.Withdraw() {
			retries++
		}
		c.Advance(50 * time.Millisecond)
	}
	if want := 20 + 100; retries != want {
		t.Fatalf("%d retries for 100 requests, want %d (20%% + 10/s*10s)", retries, want)
	}
}

func TestBudgetRatioOnly(t *testing.T) {
	b, _ := newTestBudget(0.2, 0, 10*time.Second)
	if b.Withdraw() {
		t.Fatal("retry allowed with no requests and no floor")
	}
	for range 100 {
		b.Deposit()
	}
	if got := drain(b); got != 20 {
		t.Fatalf("%d retries, want 20", got)
	}
}

func TestBudgetExpires(t *testing.T) {
	b, c := newTestBudget(0.5, 0, 10*time.Second)
	for range 100 {
		b.Deposit()
	}
	c.Advance(5 * time.Second)
	if got := drain(b); got != 50 {
		t.Fatalf("%d retries, want 50", got)
	}
	// Withdrawals expire with the deposits: a new window starts fresh.
	c.Advance(10 * time.Second)
	if b.Withdraw() {
		t.Fatal("deposits older than TTL still fund retries")
	}
	for range 10 {
		b.Deposit()
	}
	if got := drain(b); got != 5 {
		t.Fatalf("%d retries in a fresh window, want 5", got)
	}
}

// TestBudgetSliding checks the window slides rather than resetting: deposits
// made across the TTL leave one by one.
func TestBudgetSliding(t *testing.T) {
	b, c := newTestBudget(1, 0, 10*time.Second)
	for range 10 {
		b.Deposit() // one per second
		c.Advance(time.Second)
	}
	// Now 10s after the first: it has expired, the other 9 have not.
	if got := drain(b); got != 9 {
		t.Fatalf("%d retries, want 9", got)
	}
	c.Advance(5 * time.Second)
	for range 2 {
		b.Deposit()
	}
	// The 4 deposits of the last 5s plus the 2 new ones fund 6 retries, but
	// the 9 retries made 5s ago still count against them.
	if b.Withdraw() {
		t.Fatal("recent retries were forgotten")
	}
	c.Advance(6 * time.Second)
	if got := drain(b); got != 2 {
		t.Fatalf("%d retries after the old ones expired, want 2", got)
	}
}

func TestBudgetDefaults(t *testing.T) {
	b, _ := newTestBudget(-1, -1, 0)
	b.Deposit()
	if b.Withdraw() {
		t.Fatal("negative ratio and floor allowed a retry")
	}
	b, c := newTestBudget(0, 1, 0) // ttl 0 means 10s: a floor of 10
	if got := drain(b); got != 10 {
		t.Fatalf("floor = %d, want 10", got)
	}
	c.Advance(10 * time.Second)
	if got := drain(b); got != 10 {
		t.Fatalf("floor after TTL = %d, want 10", got)
	}
}

func TestBudgets(t *testing.T) {
	c := newFakeClock()
	s := NewBudgets(0.2, 0, 10*time.Second)
	s.now = c.Now
	a := s.Get("ns/a")
	if s.Get("ns/a") != a || s.Get("ns/b") == a {
		t.Fatal("Get does not keep one budget per key")
	}
	for range 10 {
		a.Deposit()
	}
	if got := drain(s.Get("ns/a")); got != 2 {
		t.Fatalf("%d retries, want 2", got)
	}
	s.Forget("ns/a")
	if s.Get("ns/a") == a {
		t.Fatal("Forget kept the budget")
	}
	if len(s.m) != 2 {
		t.Fatalf("%d budgets, want 2", len(s.m))
	}
}
