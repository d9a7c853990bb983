package tap

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/hms-node/hms-node/pkg/api"
)

const (
	// DefaultPerWorkload is the ring size New uses for perWorkload <= 0.
	DefaultPerWorkload = 512
	// MaxKeys bounds the workloads and services a Ring keeps calls of: a
	// new one beyond it evicts the one that was quiet the longest.
	MaxKeys = 4096
	// FollowBuffer is how many calls a follower may fall behind before
	// calls are dropped for it.
	FollowBuffer = 256
)

// Ring holds the recent calls of each "ns/svc" key: a call is kept under
// its caller (SourceWorkload) and its callee (DestinationService), so a
// service's calls in either role are found under its name. Its methods are
// safe for concurrent use. Calls handed to Add are shared, never copied:
// nobody may modify them afterwards.
type Ring struct {
	size    int
	dropped atomic.Uint64 // calls not delivered to a slow follower

	// mu guards the fields below.
	mu    sync.Mutex
	tick  uint64 // counts Adds; orders the keys by last use
	rings map[string]*ring
	subs  map[string]map[*follower]struct{}
}

// ring is one key's circular buffer.
type ring struct {
	calls []*api.Call // len grows to size, then wraps
	next  int         // where the next call goes once full
	used  uint64      // Ring.tick of the last Add
}

type follower struct {
	ch chan *api.Call
}

// New returns a Ring keeping the last perWorkload calls of each key
// (DefaultPerWorkload when perWorkload <= 0).
func New(perWorkload int) *Ring {
	if perWorkload <= 0 {
		perWorkload = DefaultPerWorkload
	}
	return &Ring{size: perWorkload, rings: map[string]*ring{}, subs: map[string]map[*follower]struct{}{}}
}

// Add records c under its SourceWorkload and DestinationService and hands
// it to their followers. It runs on the proxy's path for every call: it
// allocates nothing once a key's ring is full, and never blocks on a
// follower.
func (r *Ring) Add(c *api.Call) {
	if c == nil {
		return
	}
	src, dst := c.GetSourceWorkload(), c.GetDestinationService()
	r.mu.Lock()
	r.tick++
	if src != "" {
		r.addLocked(src, c)
	}
	if dst != "" && dst != src {
		r.addLocked(dst, c)
	}
	r.mu.Unlock()
}

func (r *Ring) addLocked(key string, c *api.Call) {
	rg := r.rings[key]
	if rg == nil {
		if len(r.rings) >= MaxKeys {
			r.evictLocked()
		}
		rg = &ring{calls: make([]*api.Call, 0, min(r.size, 16))}
		r.rings[key] = rg
	}
	rg.used = r.tick
	if len(rg.calls) < r.size {
		rg.calls = append(rg.calls, c)
	} else {
		rg.calls[rg.next] = c
		rg.next = (rg.next + 1) % r.size
	}
	for f := range r.subs[key] {
		select {
		case f.ch <- c:
		default:
			r.dropped.Add(1)
		}
	}
}

// evictLocked forgets the key used least recently. It scans every key, but
// runs only when a new key arrives at MaxKeys.
func (r *Ring) evictLocked() {
	var oldest string
	var used uint64
	first := true
	for k, rg := range r.rings {
		if first || rg.used < used {
			oldest, used, first = k, rg.used, false
		}
	}
	delete(r.rings, oldest)
}

// Recent returns up to n of the latest calls of the service ns/svc (as
// caller or callee), oldest first.
func (r *Ring) Recent(ns, svc string, n int) []*api.Call {
	if n <= 0 {
		return nil
	}
	key := Key(ns, svc)
	r.mu.Lock()
	defer r.mu.Unlock()
	rg := r.rings[key]
	if rg == nil {
		return nil
	}
	total := len(rg.calls)
	n = min(n, total)
	out := make([]*api.Call, 0, n)
	// The oldest call is at next once the ring wrapped, else at 0.
	start := 0
	if total == r.size {
		start = rg.next
	}
	for i := total - n; i < total; i++ {
		out = append(out, rg.calls[(start+i)%total])
	}
	return out
}

// Follow returns the calls of ns/svc recorded from now on, until ctx
// ends; then the channel is closed. A follower that falls FollowBuffer
// calls behind misses calls (see Dropped) rather than slowing Add.
func (r *Ring) Follow(ctx context.Context, ns, svc string) <-chan *api.Call {
	key := Key(ns, svc)
	f := &follower{ch: make(chan *api.Call, FollowBuffer)}
	r.mu.Lock()
	if r.subs[key] == nil {
		r.subs[key] = map[*follower]struct{}{}
	}
	r.subs[key][f] = struct{}{}
	r.mu.Unlock()
	go func() {
		<-ctx.Done()
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.subs[key], f)
		if len(r.subs[key]) == 0 {
			delete(r.subs, key)
		}
		close(f.ch) // under mu: no Add is sending to it
	}()
	return f.ch
}

// Dropped counts the calls that slow followers missed.
func (r *Ring) Dropped() uint64 { return r.dropped.Load() }

// Key is the "ns/svc" a call is indexed under; ns defaults to "default".
func Key(ns, svc string) string {
	if ns == "" {
		ns = "default"
	}
	return ns + "/" + svc
}
