package tap

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

func call(src, dst string, i int) *api.Call {
	return &api.Call{SourceWorkload: src, DestinationService: dst, Path: fmt.Sprintf("/%d", i), TimeUnixNano: int64(i)}
}

func paths(cs []*api.Call) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Path)
	}
	return out
}

func TestRecentIsBoundedAndOldestFirst(t *testing.T) {
	r := New(4)
	for i := range 10 {
		r.Add(call("default/client", "default/notify", i))
	}
	if got := fmt.Sprint(paths(r.Recent("default", "notify", 10))); got != "[/6 /7 /8 /9]" {
		t.Fatalf("recent of the callee = %s, want the last 4 oldest first", got)
	}
	if got := fmt.Sprint(paths(r.Recent("", "client", 2))); got != "[/8 /9]" {
		t.Fatalf("recent of the caller (namespace defaulted) = %s", got)
	}
	if got := r.Recent("default", "nobody", 5); len(got) != 0 {
		t.Fatalf("recent of an unknown service = %v", got)
	}
	if got := r.Recent("default", "notify", 0); len(got) != 0 {
		t.Fatalf("recent with n=0 = %v", got)
	}
	// Before the ring wraps.
	r2 := New(8)
	for i := range 3 {
		r2.Add(call("default/a", "default/b", i))
	}
	if got := fmt.Sprint(paths(r2.Recent("default", "b", 8))); got != "[/0 /1 /2]" {
		t.Fatalf("recent before wrapping = %s", got)
	}
}

func TestSelfCallIsKeptOnce(t *testing.T) {
	r := New(4)
	r.Add(call("default/a", "default/a", 1))
	if got := r.Recent("default", "a", 4); len(got) != 1 {
		t.Fatalf("a self-call is listed %d times", len(got))
	}
}

func TestAddAllocatesNothingOnceFull(t *testing.T) {
	r := New(16)
	c := call("default/client", "default/notify", 1)
	for range 16 {
		r.Add(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := r.Follow(ctx, "default", "notify")
	go func() {
		for range ch {
		}
	}()
	if n := testing.AllocsPerRun(1000, func() { r.Add(c) }); n != 0 {
		t.Fatalf("Add allocates %.1f times per call", n)
	}
}

func TestFollowSeesNewCallsUntilCanceled(t *testing.T) {
	r := New(4)
	r.Add(call("default/client", "default/notify", 0)) // before Follow: not delivered
	ctx, cancel := context.WithCancel(context.Background())
	ch := r.Follow(ctx, "default", "notify")
	other := r.Follow(ctx, "default", "elsewhere")
	r.Add(call("default/client", "default/notify", 1))
	r.Add(call("default/x", "default/y", 2))
	select {
	case c := <-ch:
		if c.Path != "/1" {
			t.Fatalf("followed %s, want /1", c.Path)
		}
	case <-time.After(time.Second):
		t.Fatal("no live call")
	}
	select {
	case c := <-other:
		t.Fatalf("a follower of another service got %v", c)
	default:
	}
	cancel()
	deadline := time.After(2 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				r.Add(call("default/client", "default/notify", 3)) // no follower left: must not panic
				return
			}
		case <-deadline:
			t.Fatal("follow channel not closed after cancel")
		}
	}
}

func TestSlowFollowerDropsInsteadOfBlocking(t *testing.T) {
	r := New(4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Follow(ctx, "default", "notify") // never read
	done := make(chan struct{})
	go func() {
		for i := range FollowBuffer + 100 {
			r.Add(call("default/client", "default/notify", i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Add blocked on a follower that does not read")
	}
	if r.Dropped() != 100 {
		t.Fatalf("dropped %d, want 100", r.Dropped())
	}
}

func TestKeysAreBounded(t *testing.T) {
	r := New(2)
	for i := range MaxKeys + 10 {
		r.Add(call(fmt.Sprintf("default/c%d", i), "", i))
	}
	r.mu.Lock()
	n := len(r.rings)
	r.mu.Unlock()
	if n != MaxKeys {
		t.Fatalf("%d keys kept, want at most %d", n, MaxKeys)
	}
	if len(r.Recent("default", "c0", 1)) != 0 || len(r.Recent("default", fmt.Sprintf("c%d", MaxKeys+9), 1)) != 1 {
		t.Fatal("eviction did not drop the least recently used key")
	}
}

func TestConcurrentAddRecentFollow(t *testing.T) {
	r := New(64)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				r.Add(call(fmt.Sprintf("default/c%d", w), "default/notify", i))
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fctx, fcancel := context.WithTimeout(ctx, 10*time.Millisecond)
			defer fcancel()
			for range r.Follow(fctx, "default", "notify") {
			}
			if got := r.Recent("default", "notify", 100); len(got) > 64 {
				t.Errorf("recent returned %d calls from a ring of 64", len(got))
			}
		}()
	}
	wg.Wait()
}
