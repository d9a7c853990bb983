package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
	"github.com/hms-node/hms-node/pkg/api"
)

// Propagation benchmark shape (DESIGN §5: a registry change reaches every
// agent's maps in ≤100 ms p99).
const (
	propAgents    = 100
	propRounds    = 200
	propTarget    = 100 * time.Millisecond
	propRoundWait = 10 * time.Second
	propPort      = 8080
)

// propRound is one measured change; agents record when they see it.
type propRound struct {
	start    time.Time
	arrivals []atomic.Int64 // ns since start, per agent; 0 = not yet
	left     atomic.Int32
	done     chan struct{}
	// seen reports whether agent i's state shows the change.
	seen func(i int) bool
}

func newPropRound(n int, skip int, seen func(i int) bool) *propRound {
	r := &propRound{arrivals: make([]atomic.Int64, n), done: make(chan struct{}), seen: seen}
	r.left.Store(int32(n))
	if skip >= 0 {
		r.arrivals[skip].Store(-1)
		r.left.Add(-1)
	}
	return r
}

func (r *propRound) check(i int) {
	if r.arrivals[i].Load() != 0 || !r.seen(i) {
		return
	}
	if r.arrivals[i].CompareAndSwap(0, int64(max(time.Since(r.start), 1))) && r.left.Add(-1) == 0 {
		close(r.done)
	}
}

// times returns the arrival latencies of the agents that saw the change.
func (r *propRound) times() []time.Duration {
	var out []time.Duration
	for i := range r.arrivals {
		if v := r.arrivals[i].Load(); v > 0 {
			out = append(out, time.Duration(v))
		}
	}
	return out
}

// BenchmarkPrivilegedPropagation measures how long a registry change takes
// to reach 100 agents (real registry.Clients on real gRPC streams, each
// mirroring its table into a real eBPF hash map laid out like hms_vips): a
// new service from the Apply call until its VIP is in every agent's map
// and table, and one agent's health flip until every other agent's Pick
// reflects it.
func BenchmarkPrivilegedPropagation(b *testing.B) {
	testbed.RequirePrivileged(b)
	cp := startBenchControl(b, 0)
	ctx := context.Background()

	var cur atomic.Pointer[propRound]
	agents := make([]*benchAgent, propAgents)
	maps := make([]*vipMap, propAgents)
	var mapErr atomic.Value
	for i := range agents {
		a := newBenchAgent(b, cp, fmt.Sprintf("node-%03d", i))
		m := newVIPMap(b)
		a.client.OnChange = func() {
			if err := m.sync(a.table); err != nil {
				mapErr.Store(err)
			}
			if r := cur.Load(); r != nil {
				r.check(i)
			}
		}
		agents[i], maps[i] = a, m
	}
	// Agent 0 runs the one instance whose health flips.
	var instMu sync.Mutex
	inst := &api.Instance{Namespace: "default", Service: "flip", Node: "node-000", Ip: "10.9.0.1", Port: propPort, Healthy: true, Workload: "flip-0"}
	agents[0].client.Instances = func() []*api.Instance {
		instMu.Lock()
		defer instMu.Unlock()
		return []*api.Instance{inst}
	}
	flipSvc := &api.Service{Name: "flip", Ports: []uint32{propPort}, Protocol: "tcp"}
	if _, err := cp.reg.Apply(ctx, &api.ApplyRequest{Services: []*api.Service{flipSvc}}); err != nil {
		b.Fatal(err)
	}
	benchStep(b, "connecting %d agents", len(agents))
	for _, a := range agents {
		a.run(b)
	}
	waitSynced(b, agents, time.Minute)
	healthyAt := func(i int, want bool) bool {
		t := agents[i].table
		svc := t.Service("default", "flip")
		if svc == nil {
			return false
		}
		_, _, done, ok := t.Pick(svc)
		if ok {
			done(nil, 0)
		}
		return ok == want
	}
	// Every agent must know the flipping instance, healthy, before round 1.
	deadline := time.Now().Add(time.Minute)
	for i := range agents {
		for !healthyAt(i, true) {
			if time.Now().After(deadline) {
				b.Fatalf("agent %d never saw the flip instance", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	benchStep(b, "%d rounds of apply-a-service and flip-health, %d agents watching", propRounds, len(agents))
	b.ResetTimer()
	var svcRounds, flipRounds, applyRPC, svcFirst, svcMedian []time.Duration
	svcMissed, flipMissed := 0, 0
	for n := 0; n < b.N; n++ {
		for r := range propRounds {
			name := fmt.Sprintf("prop-%d-%03d", n, r)
			round := newPropRound(propAgents, -1, func(i int) bool {
				svc := agents[i].table.Service("default", name)
				if svc == nil {
					return false
				}
				vip, err := netip.ParseAddr(svc.Vip)
				return err == nil && maps[i].has(netip.AddrPortFrom(vip, propPort))
			})
			round.start = time.Now()
			cur.Store(round)
			svc := &api.Service{Name: name, Ports: []uint32{propPort}, Protocol: "http"}
			if _, err := cp.reg.Apply(ctx, &api.ApplyRequest{Services: []*api.Service{svc}}); err != nil {
				b.Fatalf("apply %s: %v", name, err)
			}
			applyRPC = append(applyRPC, time.Since(round.start))
			if lat, ok := awaitRound(round, agents); ok {
				svcRounds = append(svcRounds, lat)
				ts := statsOf(round.times())
				svcFirst = append(svcFirst, minDur(round.times()))
				svcMedian = append(svcMedian, ts.p50)
			} else {
				svcMissed++
			}

			want := r%2 == 1 // round 0 flips healthy → unhealthy
			flip := newPropRound(propAgents, 0, func(i int) bool { return healthyAt(i, want) })
			instMu.Lock()
			inst = &api.Instance{Namespace: "default", Service: "flip", Node: "node-000", Ip: "10.9.0.1", Port: propPort, Healthy: want, Workload: "flip-0"}
			next := inst
			instMu.Unlock()
			flip.start = time.Now()
			cur.Store(flip)
			agents[0].client.Report(next, false)
			if lat, ok := awaitRound(flip, agents); ok {
				flipRounds = append(flipRounds, lat)
			} else {
				flipMissed++
			}
		}
	}
	b.StopTimer()
	cur.Store(nil)
	if err, _ := mapErr.Load().(error); err != nil {
		b.Fatalf("eBPF map write: %v", err)
	}
	printPropagation(os.Stdout, propResult{
		apply: applyRPC, first: svcFirst, median: svcMedian, svc: svcRounds, flip: flipRounds,
		svcMissed: svcMissed, flipMissed: flipMissed,
	})
}

// awaitRound waits for every agent to see the round's change (agents
// notice it in OnChange; a poll covers a change that arrived in the same
// delta as an earlier one). The round's latency is the last agent's.
func awaitRound(r *propRound, agents []*benchAgent) (time.Duration, bool) {
	timeout := time.After(propRoundWait)
	select {
	case <-r.done:
	case <-timeout:
		for i := range agents {
			r.check(i)
		}
		if r.left.Load() > 0 {
			return 0, false
		}
	}
	var last time.Duration
	for _, d := range r.times() {
		last = max(last, d)
	}
	return last, true
}

func minDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}
