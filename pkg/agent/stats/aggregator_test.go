package stats

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

func obs(a *Aggregator, src, dst string, status uint32, latency time.Duration) {
	a.Observe(&api.Call{SourceWorkload: src, DestinationService: dst, Status: status, LatencyUs: latency.Microseconds()})
}

func TestEdgesCountRequestsErrorsAndP99(t *testing.T) {
	a := New()
	// 100 calls client → notify: 98 fast, 2 slow; 3 errors (500, 503, no response).
	for i := range 98 {
		status := uint32(200)
		if i == 0 {
			status = 500
		}
		if i == 1 {
			status = 404 // a client error is not the service's failure
		}
		obs(a, "default/client", "default/notify", status, 3*time.Millisecond)
	}
	obs(a, "default/client", "default/notify", 503, 700*time.Millisecond)
	obs(a, "default/client", "default/notify", 0, 800*time.Millisecond)
	obs(a, "default/web", "default/notify", 200, 40*time.Millisecond)

	st := a.Take(5 * time.Second)
	if st.WindowMs != 5000 || len(st.Edges) != 2 {
		t.Fatalf("stats %v, want window 5000 and 2 edges", st)
	}
	e := st.Edges[0]
	if e.Source != "default/client" || e.Destination != "default/notify" || e.Requests != 100 || e.Errors != 3 {
		t.Fatalf("edge %v, want 100 requests and 3 errors from client to notify", e)
	}
	// The 99th of 100 calls is the first slow one: in the (500ms, 1s] bucket,
	// capped by the slowest call (800ms).
	if e.P99Ms != 800 {
		t.Fatalf("p99 %vms, want 800", e.P99Ms)
	}
	if w := st.Edges[1]; w.Source != "default/web" || w.Requests != 1 || w.Errors != 0 || w.P99Ms != 40 {
		t.Fatalf("edge %v, want 1 ok request from web, p99 40ms (capped by its only call)", w)
	}
	// Take resets the window.
	if st := a.Take(time.Second); len(st.Edges) != 0 {
		t.Fatalf("second take %v, want no edges", st.Edges)
	}
}

func TestP99OfFastEdgeIsItsBucketBound(t *testing.T) {
	a := New()
	for range 200 {
		obs(a, "default/a", "default/b", 200, 1200*time.Microsecond)
	}
	for range 2 { // 1% slow: above the 99th percentile
		obs(a, "default/a", "default/b", 200, 40*time.Millisecond)
	}
	e := a.Take(time.Second).Edges[0]
	if e.P99Ms != 2.5 {
		t.Fatalf("p99 %vms, want the 2.5ms bucket bound", e.P99Ms)
	}
	// Beyond the last bound: the slowest call.
	obs(a, "default/a", "default/b", 200, 90*time.Second)
	if e := a.Take(time.Second).Edges[0]; e.P99Ms != 90000 {
		t.Fatalf("p99 of one 90s call %vms", e.P99Ms)
	}
}

func TestEdgesAreBounded(t *testing.T) {
	a := New()
	for i := range MaxEdges + 5 {
		obs(a, fmt.Sprintf("default/c%d", i), "default/b", 200, time.Millisecond)
	}
	if a.Overflow() != 5 {
		t.Fatalf("overflow %d, want 5", a.Overflow())
	}
	if st := a.Take(time.Second); len(st.Edges) != MaxEdges || a.Overflow() != 0 {
		t.Fatalf("%d edges, overflow %d after take", len(st.Edges), a.Overflow())
	}
}

func TestObserveAllocatesNothingForAKnownEdge(t *testing.T) {
	a := New()
	c := &api.Call{SourceWorkload: "default/a", DestinationService: "default/b", Status: 200, LatencyUs: 900}
	a.Observe(c)
	if n := testing.AllocsPerRun(1000, func() { a.Observe(c) }); n != 0 {
		t.Fatalf("Observe allocates %.1f times per call", n)
	}
}

func TestConcurrentObserveAndTake(t *testing.T) {
	a := New()
	var wg sync.WaitGroup
	var total uint64
	var mu sync.Mutex
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st := a.Take(time.Millisecond)
			mu.Lock()
			for _, e := range st.Edges {
				total += e.Requests
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	var obsWG sync.WaitGroup
	for range 4 {
		obsWG.Add(1)
		go func() {
			defer obsWG.Done()
			for range 5000 {
				obs(a, "default/a", "default/b", 200, time.Millisecond)
			}
		}()
	}
	obsWG.Wait()
	close(stop)
	wg.Wait()
	for _, e := range a.Take(time.Millisecond).Edges {
		total += e.Requests
	}
	if total != 20000 {
		t.Fatalf("counted %d requests over all windows, want 20000", total)
	}
}
