package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// Two services in front of the same server binary (one pod each: a pod is
// enrolled as one service): the L4 path pipes bytes through the HBONE
// tunnel, the L7 path parses every request on both agents.
const l7BenchManifests = `service: {name: l4-svc, port: 8080}
protocol: tcp
---
service: {name: l7-svc, port: 8080}
protocol: http
`

// l7BenchPaths are the paths in their round order; odd rounds run them
// reversed, so neither mesh path always follows the other.
var l7BenchPaths = []string{"direct", "l4", "l7"}

// BenchmarkPrivilegedL7 measures what the L7 features cost over the L4
// path through the same two agents: client pod on n1 → service VIP →
// agent n1 → HBONE → agent n2 → server pod, with protocol: tcp (l4) and
// protocol: http (l7), next to an unenrolled pod pair (direct). Part one
// is fortio at a fixed 1000 requests/s over 4 keep-alive connections
// (1 KiB responses), part two a closed loop over 16 connections for the
// most requests/s one agent pair serves on this machine. Both run in
// interleaved rounds; figures are medians of rounds, and the L7 − L4
// difference is taken within each round.
func BenchmarkPrivilegedL7(b *testing.B) {
	testbed.RequirePrivileged(b)
	fortioBin(b)
	bed := testbed.New(b)
	control := newControl(b)
	n1, n2 := bed.MustAddNode(b, "n1"), bed.MustAddNode(b, "n2")
	m1, m2 := fmt.Sprintf("127.0.0.1:%d", freePort(b)), fmt.Sprintf("127.0.0.1:%d", freePort(b))
	a1 := newAgent(b, n1, append(control.agentFlags(), "--metrics-addr", m1)...)
	a2 := newAgent(b, n2, append(control.agentFlags(), "--metrics-addr", m2)...)
	a1.start()
	a2.start()
	control.apply(l7BenchManifests)
	benchStep(b, "two nodes up; setting up direct, l4 and l7 paths")

	mesh := n1.MustAddPod(b, "c-mesh")
	a1.enroll(mesh, "bench-client")
	paths := map[string]*mtlsPath{}
	for _, name := range l7BenchPaths {
		s := n2.MustAddPod(b, "s-"+name)
		startServer(b, s, 8080, testApp, "http", "--addr", ":8080", "--body", mtlsBody)
		p := &mtlsPath{name: name, client: mesh, url: fmt.Sprintf("http://%s:8080/", s.IP)}
		if name == "direct" {
			p.client = n1.MustAddPod(b, "c-direct")
		} else {
			svc := name + "-svc"
			a2.enroll(s, svc, 8080)
			waitFor(b, 30*time.Second, svc+" healthy", func() bool { return control.healthyInstances(svc) == 1 })
			p.url = fmt.Sprintf("http://%s:8080/", serviceVIP(b, control, svc))
			p.pids = []int{a1.cmd.Process.Pid, a2.cmd.Process.Pid}
		}
		waitFor(b, 20*time.Second, name+" answering by content", func() bool {
			out, err := run(b, p.client, "curl", "-sS", "--max-time", "2", p.url+"b")
			return err == nil && out == mtlsBody+" path=/b\n"
		})
		p.url += "b"
		paths[name] = p
	}
	verifyL7Path(b, paths, m1, m2)

	rounds, secs := envInt("HMS_BENCH_ROUNDS", 3), envInt("HMS_BENCH_SECONDS", 20)
	maxSecs := envInt("HMS_BENCH_MAX_SECONDS", 15)
	res := runL7Rounds(b, paths, rounds, secs, maxSecs)
	printL7Table(res, rounds, secs, maxSecs)
	for _, name := range []string{"l4", "l7"} {
		benchStep(b, "profiling the client-side agent on the %s path", name)
		profileAgent(b, paths[name], a1.cmd.Process.Pid, "agent n1 (client side), "+name+" path")
	}
}

// runL7Rounds warms each path up, then runs the fixed-rate loads and the
// closed loops in interleaved rounds, every other round in reverse order.
func runL7Rounds(b *testing.B, paths map[string]*mtlsPath, rounds, secs, maxSecs int) map[string]map[string][]float64 {
	res := map[string]map[string][]float64{}
	benchStep(b, "warming up %d paths", len(l7BenchPaths))
	for _, name := range l7BenchPaths { // warm-up: pools, TLS sessions, page cache
		res[name] = map[string][]float64{}
		l7Load(b, paths[name], 1000, 4, 3)
	}
	for r := 0; r < rounds; r++ {
		order := append([]string(nil), l7BenchPaths...)
		if r%2 == 1 {
			for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
				order[i], order[j] = order[j], order[i]
			}
		}
		benchStep(b, "round %d/%d: %ds at 1000 qps, then %ds closed loop, per path", r+1, rounds, secs, maxSecs)
		for _, name := range order {
			collect(res[name], "", l7Load(b, paths[name], 1000, 4, secs))
		}
		for _, name := range order {
			collect(res[name], "max_", l7Load(b, paths[name], 0, 16, maxSecs))
		}
	}
	return res
}

// collect appends each figure of one load to res under prefix+name.
func collect(res map[string][]float64, prefix string, figs map[string]float64) {
	for k, v := range figs {
		res[prefix+k] = append(res[prefix+k], v)
	}
}

// verifyL7Path fails b unless l7-svc is really served at L7 and l4-svc at
// L4: the application behind l7-svc sees the trace headers the L7 proxy
// adds, the one behind l4-svc sees the client's headers untouched, and
// the agents count requests (istio_requests_total) for l7-svc only.
func verifyL7Path(b *testing.B, paths map[string]*mtlsPath, metricsAddrs ...string) {
	b.Helper()
	headers := func(name string) string {
		p := paths[name]
		out, err := run(b, p.client, "curl", "-sS", "--max-time", "5", strings.TrimSuffix(p.url, "b")+"headers")
		if err != nil || !strings.HasPrefix(out, mtlsBody+" headers\n") {
			b.Fatalf("%s /headers: %v\n%s", name, err, out)
		}
		return out
	}
	if out := headers("l7"); !strings.Contains(out, "X-Hms-Trace-Id: ") || !strings.Contains(out, "Traceparent: 00-") {
		b.Fatalf("l7-svc: the application saw no trace headers, so no L7 proxy:\n%s", out)
	}
	if out := headers("l4"); strings.Contains(out, "X-Hms-Trace-Id") || strings.Contains(out, "Traceparent") {
		b.Fatalf("l4-svc: the application saw trace headers, so an L7 proxy:\n%s", out)
	}
	var l4, l7 float64
	waitFor(b, 10*time.Second, "istio_requests_total for l7-svc", func() bool {
		l4, l7 = 0, 0
		for _, addr := range metricsAddrs {
			l4 += scrapeRequests(b, addr, "l4-svc")
			l7 += scrapeRequests(b, addr, "l7-svc")
		}
		return l7 > 0
	})
	if l4 != 0 {
		b.Fatalf("istio_requests_total counts %v requests for l4-svc: not an L4 path", l4)
	}
	fmt.Printf("path check: l7-svc adds trace headers and counts %v requests (both agents); l4-svc adds none and counts %v\n", l7, l4)
}
