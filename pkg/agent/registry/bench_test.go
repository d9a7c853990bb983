package registry

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// Scale of the benchmark registry: 10,000 services of 10 instances.
const (
	benchServices = 10_000
	benchPerSvc   = 10
)

// bigSnapshot builds a registry shaped like a large mesh: each service has
// an http port, instances spread over 500 nodes, workload ids like netns
// paths.
func bigSnapshot() *api.Snapshot {
	s := &api.Snapshot{Revision: 1}
	for i := range benchServices {
		ns := fmt.Sprintf("team-%d", i%50)
		name := fmt.Sprintf("service-%05d", i)
		s.Services = append(s.Services, &api.Service{Namespace: ns, Name: name, Protocol: "http",
			Ports: []uint32{8080}, Vip: netip.AddrFrom4([4]byte{240, 240, byte(i >> 8), byte(i)}).String()})
		for j := range benchPerSvc {
			n := i*benchPerSvc + j
			ip := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String()
			s.Instances = append(s.Instances, &api.Instance{Namespace: ns, Service: name, Node: fmt.Sprintf("node-%03d", n%500),
				Ip: ip, Port: 8080, Healthy: true, Version: "1.0.0", Workload: "/var/run/netns/pod-" + ip})
		}
	}
	return s
}

func bigTable(tb testing.TB) (*Table, []*api.Service, []netip.AddrPort) {
	tb.Helper()
	s := bigSnapshot()
	t := NewTable()
	t.ApplySnapshot(s)
	dsts := make([]netip.AddrPort, 0, len(s.Services))
	for _, svc := range s.Services {
		dsts = append(dsts, netip.AddrPortFrom(netip.MustParseAddr(svc.Vip), 80))
	}
	return t, s.Services, dsts
}

// heapAfterGC is the live heap.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryPerEndpoint measures the live heap of a 10,000-service /
// 100,000-instance table (the wire objects it keeps included) against the
// 1 KiB per endpoint budget.
func TestMemoryPerEndpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100,000-instance table")
	}
	before := heapAfterGC()
	tb := NewTable()
	tb.ApplySnapshot(bigSnapshot()) // the snapshot message itself is garbage after this
	after := heapAfterGC()
	perEP := float64(after-before) / (benchServices * benchPerSvc)
	t.Logf("table of %d services / %d instances: %.1f MiB live, %.0f bytes per endpoint",
		benchServices, benchServices*benchPerSvc, float64(after-before)/(1<<20), perEP)
	fmt.Printf("bytes/endpoint: %.0f\n", perEP)
	if perEP > 1024 {
		t.Errorf("%.0f bytes per endpoint, budget 1024", perEP)
	}
	runtime.KeepAlive(tb)
}

func BenchmarkLookupVIP(b *testing.B) {
	t, _, dsts := bigTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, ok := t.LookupVIP(dsts[i%len(dsts)]); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkLookupName(b *testing.B) {
	t, svcs, _ := bigTable(b)
	names := make([]string, len(svcs))
	for i, s := range svcs {
		names[i] = s.Name + "." + s.Namespace + ".svc."
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, found, _ := t.LookupName(names[i%len(names)]); !found {
			b.Fatal("miss")
		}
	}
}

func BenchmarkPick(b *testing.B) {
	t, svcs, _ := bigTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_, _, done, ok := t.Pick(svcs[i%len(svcs)])
		if !ok {
			b.Fatal("no pick")
		}
		done(nil, time.Millisecond)
	}
}

func BenchmarkPickParallel(b *testing.B) {
	t, svcs, _ := bigTable(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_, _, done, _ := t.Pick(svcs[i%len(svcs)])
			done(nil, time.Millisecond)
			i++
		}
	})
}

// BenchmarkApplySnapshot reports the cost of a full resync and the live
// bytes per endpoint of the result (the wire objects it keeps included).
func BenchmarkApplySnapshot(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		before := heapAfterGC()
		s := bigSnapshot()
		b.StartTimer()
		t := NewTable()
		t.ApplySnapshot(s)
		b.StopTimer()
		s = nil
		after := heapAfterGC()
		b.ReportMetric(float64(after-before)/(benchServices*benchPerSvc), "B/endpoint")
		runtime.KeepAlive(t)
		b.StartTimer()
	}
}

func BenchmarkApplyDelta(b *testing.B) {
	t, _, _ := bigTable(b)
	in := &api.Instance{Namespace: "team-1", Service: "service-00001", Node: "node-001", Ip: "10.0.0.11", Port: 8080,
		Workload: "/var/run/netns/pod-10.0.0.11"}
	d := &api.Delta{Changes: []*api.Change{{Key: "/hms/v1/instances/team-1/service-00001/node-001/pod-10.0.0.11",
		Object: &api.Change_Instance{Instance: in}}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := int64(2); b.Loop(); i++ {
		in.Healthy = i%2 == 0
		d.Revision = i
		t.ApplyDelta(d)
	}
}

// BenchmarkPickHot picks for one service of the big table, as an agent
// whose pods call a few services does; BenchmarkPick cycles through all
// 10,000 and so misses the CPU caches on every call.
func BenchmarkPickHot(b *testing.B) {
	t, svcs, _ := bigTable(b)
	web := svcs[42]
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_, _, done, _ := t.Pick(web)
		done(nil, time.Millisecond)
	}
}

// BenchmarkLookupPick is the agent's per-connection registry work, as the
// e2e scale bench measures it: LookupVIP of the original destination, a
// pick for the service it leads to, done. It strides through the 10,000
// services, so most calls miss the CPU caches. Target: < 1 µs, 0 allocs.
// PickTarget uses the bucket the lookup resolved; Pick finds it again from
// the service pointer.
func BenchmarkLookupPick(b *testing.B) {
	for _, bc := range []struct {
		name string
		pick func(t *Table, tgt Target) (func(error, time.Duration), bool)
	}{
		{"PickTarget", func(t *Table, tgt Target) (func(error, time.Duration), bool) {
			_, _, done, ok := t.PickTarget(tgt)
			return done, ok
		}},
		{"Pick", func(t *Table, tgt Target) (func(error, time.Duration), bool) {
			_, _, done, ok := t.Pick(tgt.Service)
			return done, ok
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			t, _, dsts := bigTable(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				tgt, ok := t.LookupVIP(dsts[(i*7919)%len(dsts)])
				if !ok {
					b.Fatal("miss")
				}
				done, ok := bc.pick(t, tgt)
				if !ok {
					b.Fatal("no pick")
				}
				done(nil, 0)
			}
		})
	}
}
