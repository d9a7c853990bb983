package resilience

import (
	"sync"
	"time"
)

// budgetSlots is how finely the TTL window slides: a deposit expires between
// TTL*(1-1/budgetSlots) and TTL after it was made.
const budgetSlots = 10

// Budget is a retry budget (Linkerd/Finagle style): retries may be at most
// Ratio of the requests seen in the last TTL, plus MinPerSecond*TTL as a
// floor, so retries never multiply an outage while a quiet service can still
// retry at all.
type Budget struct {
	ratio   float64
	reserve float64 // MinPerSecond*TTL
	width   time.Duration
	now     func() time.Time // injectable for tests

	mu    sync.Mutex // guards the fields below
	base  time.Time  // set on first use, so tests can swap now after New
	slots [budgetSlots]budgetSlot
}

type budgetSlot struct {
	epoch       int64 // which width-long interval since base the counts are for
	deposits    int64
	withdrawals int64
}

// NewBudget returns a budget, e.g. NewBudget(0.2, 10, 10*time.Second).
// Negative ratio or minPerSecond count as 0; ttl <= 0 means 10s.
func NewBudget(ratio, minPerSecond float64, ttl time.Duration) *Budget {
	if ttl <= 0 {
		ttl = 10 * time.Second
	}
	width := max(ttl/budgetSlots, 1)
	return &Budget{
		ratio:   max(ratio, 0),
		reserve: max(minPerSecond, 0) * ttl.Seconds(),
		width:   width,
		now:     time.Now,
	}
}

// Deposit records one original request.
func (b *Budget) Deposit() {
	b.mu.Lock()
	b.slotLocked(b.now()).deposits++
	b.mu.Unlock()
}

// Withdraw reports whether a retry may go, and if so counts it.
func (b *Budget) Withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.slotLocked(b.now())
	var dep, wd int64
	for i := range b.slots {
		if s := &b.slots[i]; s.epoch > cur.epoch-budgetSlots && s.epoch <= cur.epoch {
			dep += s.deposits
			wd += s.withdrawals
		}
	}
	// The epsilon keeps 0.2*100 from landing a hair under 20.
	if float64(wd+1) > b.ratio*float64(dep)+b.reserve+1e-9 {
		return false
	}
	cur.withdrawals++
	return true
}

// slotLocked returns the slot for now, cleared if it held an older interval.
// It needs b.mu held.
func (b *Budget) slotLocked(now time.Time) *budgetSlot {
	if b.base.IsZero() {
		b.base = now
	}
	e := max(int64(now.Sub(b.base)/b.width), 0)
	s := &b.slots[e%budgetSlots]
	if s.epoch != e {
		*s = budgetSlot{epoch: e}
	}
	return s
}

// Budgets holds one Budget per key (destination service), all with the same
// parameters. Keys are bounded by the registry; Forget drops deleted ones.
type Budgets struct {
	ratio, minPerSecond float64
	ttl                 time.Duration
	now                 func() time.Time // injectable for tests

	mu sync.RWMutex // guards m
	m  map[string]*Budget
}

// NewBudgets returns an empty set of budgets made with NewBudget's parameters.
func NewBudgets(ratio, minPerSecond float64, ttl time.Duration) *Budgets {
	return &Budgets{ratio: ratio, minPerSecond: minPerSecond, ttl: ttl,
		now: time.Now, m: make(map[string]*Budget)}
}

// Get returns key's budget, creating it.
func (s *Budgets) Get(key string) *Budget {
	s.mu.RLock()
	b := s.m[key]
	s.mu.RUnlock()
	if b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b = s.m[key]; b == nil {
		b = NewBudget(s.ratio, s.minPerSecond, s.ttl)
		b.now = s.now
		s.m[key] = b
	}
	return b
}

// Forget drops key's budget, for a deleted service.
func (s *Budgets) Forget(key string) {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}
