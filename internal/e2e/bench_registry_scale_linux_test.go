package e2e

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/hms-node/hms-node/internal/testbed"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/api"
)

// Registry scale benchmark shape.
const (
	scaleServices   = 10000
	scalePerService = 10
	scaleInstances  = scaleServices * scalePerService
	scaleAgents     = 100
	scaleBatch      = 500
	scaleOps        = 1_000_000
)

func scaleService(i int) string { return fmt.Sprintf("svc-%05d", i) }

// scaleInstancesOf builds agent a's share of the instances on demand (its
// Hello), so the benchmark itself holds none of them.
func scaleInstancesOf(a int) []*api.Instance {
	per := scaleInstances / scaleAgents
	node := fmt.Sprintf("node-%03d", a)
	out := make([]*api.Instance, per)
	for m := range per {
		k := a*per + m
		ip := netip.AddrFrom4([4]byte{10, byte(k >> 16), byte(k >> 8), byte(k)})
		out[m] = &api.Instance{Namespace: "default", Service: scaleService(k / scalePerService), Node: node,
			Ip: ip.String(), Port: 8080, Healthy: true, Version: "v1", Workload: fmt.Sprintf("w%06d", k)}
	}
	return out
}

// discardRecv empties every snapshot and delta a registering agent
// receives (keeping revisions), so that 100 load-generating agents do not
// each hold the full registry in this process: the measured heap is then
// the control plane's and etcd's, and one new agent is measured alone.
func discardRecv(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
	streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return discardStream{cs}, nil
}

type discardStream struct{ grpc.ClientStream }

func (s discardStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if cm, ok := m.(*api.ControlMessage); ok && err == nil {
		switch x := cm.Msg.(type) {
		case *api.ControlMessage_Snapshot:
			x.Snapshot = &api.Snapshot{Revision: x.Snapshot.Revision, HeartbeatMs: x.Snapshot.HeartbeatMs}
		case *api.ControlMessage_Delta:
			x.Delta = &api.Delta{Revision: x.Delta.Revision}
		}
	}
	return err
}

// BenchmarkPrivilegedRegistryScale registers 10,000 services and 100,000
// instances through the real API and measures the control plane's memory,
// etcd's size, a new agent's full sync, the agent table's memory per
// endpoint and the agent's lookup + pick cost.
func BenchmarkPrivilegedRegistryScale(b *testing.B) {
	testbed.RequirePrivileged(b)
	for n := 0; n < b.N; n++ {
		printScale(os.Stdout, runScale(b))
	}
}

func runScale(b *testing.B) scaleResult {
	cp := startBenchControl(b, 0)
	ctx := context.Background()
	r := scaleResult{services: scaleServices, instances: scaleInstances}
	r.heapBefore = heapInuse()

	benchStep(b, "applying %d services", scaleServices)
	start := time.Now()
	for i := 0; i < scaleServices; i += scaleBatch {
		req := &api.ApplyRequest{}
		for j := i; j < min(i+scaleBatch, scaleServices); j++ {
			req.Services = append(req.Services, &api.Service{Name: scaleService(j), Ports: []uint32{8080}, Protocol: "tcp"})
		}
		if _, err := cp.reg.Apply(ctx, req); err != nil {
			b.Fatalf("apply services %d..: %v", i, err)
		}
	}
	r.applyTime = time.Since(start)

	start = time.Now()
	// Agents connect in waves (a rolling start); an agent's first snapshot
	// comes after its Hello's instances are in etcd.
	r.wave = envInt("HMS_BENCH_CONNECT_WAVE", 10)
	benchStep(b, "connecting %d agents in waves of %d", scaleAgents, r.wave)
	regs := make([]*benchAgent, scaleAgents)
	for a := range regs {
		regs[a] = newBenchAgent(b, cp, fmt.Sprintf("node-%03d", a), bigRecv, grpc.WithStreamInterceptor(discardRecv))
		regs[a].client.Instances = func() []*api.Instance { return scaleInstancesOf(a) }
		regs[a].run(b)
		if (a+1)%r.wave == 0 || a+1 == len(regs) {
			benchStep(b, "agents %d/%d connected; waiting for them to sync", a+1, len(regs))
			waitSynced(b, regs[:a+1], 5*time.Minute)
		}
	}
	r.registerTime = time.Since(start)
	r.heapAfter = heapInuse()
	r.etcdDB = cp.etcdDBSize()

	list, err := cp.reg.List(ctx, &api.ListRequest{})
	if err != nil {
		b.Fatal(err)
	}
	if len(list.Services) != scaleServices || len(list.Instances) != scaleInstances {
		b.Fatalf("registry has %d services, %d instances; want %d, %d", len(list.Services), len(list.Instances), scaleServices, scaleInstances)
	}
	snap := &api.Snapshot{Revision: list.Revision, Services: list.Services, Instances: list.Instances, HeartbeatMs: 5000}
	r.snapshotBytes = proto.Size(&api.ControlMessage{Msg: &api.ControlMessage_Snapshot{Snapshot: snap}})
	list = nil

	benchStep(b, "probing the default gRPC receive limit, then a new agent's full sync")
	r.defaultLimitErr = probeDefaultLimit(b, cp)
	r.connectToFull = newAgentSync(b, cp)
	r.tableBytes, r.applySnapshot = tableFootprint(snap)
	snap = nil
	benchStep(b, "timing lookups and picks")
	lookupPick(b, cp, &r)
	return r
}

// probeDefaultLimit connects an agent dialled like pkg/agent dials (gRPC
// defaults) and returns why its stream fails, or "" if it syncs.
func probeDefaultLimit(b *testing.B, cp *benchControl) string {
	a := newBenchAgent(b, cp, "probe-default")
	a.run(b)
	defer a.stop()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		st := a.client.State()
		if st.Revision > 0 {
			return ""
		}
		if st.LastError != "" {
			return st.LastError
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "no snapshot within 20s"
}

// newAgentSync times a new agent (receive limit raised) from connect until
// its table holds every endpoint.
func newAgentSync(b *testing.B, cp *benchControl) time.Duration {
	a := newBenchAgent(b, cp, "new-agent", bigRecv)
	full := make(chan time.Time, 1)
	var once sync.Once
	a.client.OnChange = func() {
		if countEndpoints(a.table) == scaleInstances {
			once.Do(func() { full <- time.Now() })
		}
	}
	start := time.Now()
	a.run(b)
	defer a.stop()
	select {
	case at := <-full:
		return at.Sub(start)
	case <-time.After(2 * time.Minute):
		b.Fatalf("new agent: table has %d endpoints after 2m; state %+v", countEndpoints(a.table), a.client.State())
		return 0
	}
}

func countEndpoints(t *registry.Table) int {
	n := 0
	for i := range scaleServices {
		n += len(t.Endpoints("default", scaleService(i)))
	}
	return n
}

// tableFootprint is the heap a Table built from snap keeps (the instances
// it retains included), and how long ApplySnapshot took.
func tableFootprint(snap *api.Snapshot) (int64, time.Duration) {
	before := heapInuse()
	s := proto.Clone(snap).(*api.Snapshot)
	t := registry.NewTable()
	start := time.Now()
	t.ApplySnapshot(s)
	took := time.Since(start)
	s = nil
	after := heapInuse()
	runtime.KeepAlive(t)
	return int64(after) - int64(before), took
}

// lookupPick measures the agent's per-connection work: LookupVIP of the
// original destination, then Pick (or PickTarget) of an endpoint and its
// done.
func lookupPick(b *testing.B, cp *benchControl, r *scaleResult) {
	list, err := cp.reg.List(context.Background(), &api.ListRequest{})
	if err != nil {
		b.Fatal(err)
	}
	t := registry.NewTable()
	t.ApplySnapshot(&api.Snapshot{Revision: list.Revision, Services: list.Services, Instances: list.Instances})
	list = nil
	var vips []netip.AddrPort
	for _, v := range t.VIPs() {
		vips = append(vips, v.Addr)
	}
	if len(vips) != scaleServices {
		b.Fatalf("%d VIPs, want %d", len(vips), scaleServices)
	}
	svcs := make([]registry.Target, len(vips))
	for i, vp := range vips {
		svcs[i], _ = t.LookupVIP(vp)
	}
	idx := func(i int) int { return (i * 7919) % len(vips) } // spread over services, no rand cost
	var misses atomic.Int64
	// The best of 3 runs, each after a GC, so that neither a collection of
	// the setup's garbage nor another process on this small VM is measured.
	timeIt := func(f func(i int)) float64 {
		best := math.MaxFloat64
		for range 3 {
			runtime.GC()
			start := time.Now()
			for i := range scaleOps {
				f(i)
			}
			best = min(best, float64(time.Since(start).Nanoseconds())/scaleOps)
		}
		return best
	}
	r.lookupNs = timeIt(func(i int) {
		if _, ok := t.LookupVIP(vips[idx(i)]); !ok {
			b.Fatal("lookup miss")
		}
	})
	r.pickNs = timeIt(func(i int) {
		_, _, done, ok := t.Pick(svcs[idx(i)].Service)
		if !ok {
			b.Fatal("pick failed")
		}
		done(nil, 0)
	})
	both := func(i int) { // runs on several goroutines: no b.Fatal here
		tgt, ok := t.LookupVIP(vips[idx(i)])
		if !ok {
			misses.Add(1)
			return
		}
		_, _, done, ok := t.Pick(tgt.Service)
		if !ok {
			misses.Add(1)
			return
		}
		done(nil, 0)
	}
	r.bothNs = timeIt(both)
	// PickTarget uses the service bucket LookupVIP resolved.
	r.bothTargetNs = timeIt(func(i int) {
		tgt, ok := t.LookupVIP(vips[idx(i)])
		if !ok {
			b.Fatal("lookup miss")
		}
		_, _, done, ok := t.PickTarget(tgt)
		if !ok {
			b.Fatal("pick failed")
		}
		done(nil, 0)
	})
	r.parallelism = runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	runtime.GC()
	start := time.Now()
	for g := range r.parallelism {
		wg.Go(func() {
			for i := range scaleOps {
				both(i + g*31)
			}
		})
	}
	wg.Wait()
	r.par = float64(time.Since(start).Nanoseconds()) / scaleOps
	if n := misses.Load(); n > 0 {
		b.Fatalf("%d lookups or picks failed", n)
	}
}
