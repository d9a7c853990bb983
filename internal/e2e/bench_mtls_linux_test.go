package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

const mtlsBenchManifests = `service: {name: bench-http, port: 8080}
protocol: http
health: {path: /healthz, interval: 1s}
---
service: {name: bench-bulk, port: 7001}
protocol: tcp
`

// mtlsPath is one way from the client pod on n1 to a server on n2.
type mtlsPath struct {
	name     string
	client   *testbed.Pod
	url      string // fortio target
	bulkAddr string // hms-testapp bulk target
	pids     []int  // the proxies whose CPU and RSS the path costs
}

// mtlsBody is the 1 KiB response body: the server prints "<body> path=/b\n".
var mtlsBody = "bench-" + strings.Repeat("x", 1024-len("bench-")-len(" path=/b\n"))

// BenchmarkPrivilegedMTLS follows Istio's method: two nodes, HTTP/1.1
// keep-alive, 1 KiB responses, 4 connections at a fixed 1000 requests/s
// (fortio), comparing in one run, interleaved, direct pod → pod, hms-node
// (both pods enrolled: cross-node HBONE mTLS) and a classic sidecar pair
// (HAProxy, TLS 1.3 with mutual verification); plus one bulk stream over
// each. Figures are medians of rounds; added latency is the median of each
// round's difference to direct.
func BenchmarkPrivilegedMTLS(b *testing.B) {
	testbed.RequirePrivileged(b)
	fortioBin(b)
	bed := testbed.New(b)
	control := newControl(b)
	n1, n2 := bed.MustAddNode(b, "n1"), bed.MustAddNode(b, "n2")
	a1, a2 := newAgent(b, n1, control.agentFlags()...), newAgent(b, n2, control.agentFlags()...)
	a1.start()
	a2.start()
	control.apply(mtlsBenchManifests)
	benchStep(b, "two nodes up; setting up direct, hms-node and haproxy paths")

	paths := []*mtlsPath{}
	for _, name := range []string{"direct", "hms-node", "haproxy"} {
		c, s := n1.MustAddPod(b, "c-"+name), n2.MustAddPod(b, "s-"+name)
		startServer(b, s, 8080, testApp, "http", "--addr", ":8080", "--body", mtlsBody)
		startServer(b, s, 7001, testApp, "bulk-server", "--addr", ":7001")
		p := &mtlsPath{name: name, client: c, url: fmt.Sprintf("http://%s:8080/b", s.IP), bulkAddr: fmt.Sprintf("%s:7001", s.IP)}
		switch name {
		case "hms-node":
			a1.enroll(c, "bench-client")
			a2.enroll(s, "bench-http", 8080)
			sb := n2.MustAddPod(b, "s-bulk")
			startServer(b, sb, 7001, testApp, "bulk-server", "--addr", ":7001")
			a2.enroll(sb, "bench-bulk", 7001)
			waitFor(b, 30*time.Second, "bench services healthy", func() bool {
				return control.healthyInstances("bench-http") == 1 && control.healthyInstances("bench-bulk") == 1
			})
			p.url = fmt.Sprintf("http://%s:8080/b", serviceVIP(b, control, "bench-http"))
			p.bulkAddr = serviceVIP(b, control, "bench-bulk") + ":7001"
			p.pids = []int{a1.cmd.Process.Pid, a2.cmd.Process.Pid}
		case "haproxy":
			cp, sp := startHAProxyPair(b, c, s)
			p.url = fmt.Sprintf("http://127.0.0.1:%d/b", haHTTPOut)
			p.bulkAddr = fmt.Sprintf("127.0.0.1:%d", haBulkOut)
			p.pids = []int{cp, sp}
		}
		waitFor(b, 20*time.Second, name+" answering by content", func() bool {
			out, err := run(b, c, "curl", "-sS", "--max-time", "2", p.url)
			return err == nil && out == mtlsBody+" path=/b\n"
		})
		paths = append(paths, p)
	}

	rounds, secs := envInt("HMS_BENCH_ROUNDS", 3), envInt("HMS_BENCH_SECONDS", 30)
	bulkBytes := int64(envInt("HMS_BENCH_BULK_MB", 1024)) << 20
	res := map[string]map[string][]float64{}
	benchStep(b, "warming up %d paths", len(paths))
	for _, p := range paths { // warm-up: pools, TLS sessions, page cache
		fortioRound(b, p, 3)
	}
	for r := 0; r < rounds; r++ {
		for _, p := range paths {
			benchStep(b, "round %d/%d: %s, %ds at 1000 qps, then %d MiB bulk", r+1, rounds, p.name, secs, bulkBytes>>20)
			m := res[p.name]
			if m == nil {
				m = map[string][]float64{}
				res[p.name] = m
			}
			for k, v := range fortioRound(b, p, secs) {
				m[k] = append(m[k], v)
			}
			m["bulk"] = append(m["bulk"], bulkOnce(b, p, bulkBytes))
		}
	}
	for _, p := range paths {
		for i, pid := range p.pids {
			res[p.name][fmt.Sprintf("rss%d", i)] = []float64{procRSS(b, pid)}
		}
	}
	printMTLSTable(res, rounds, secs, bulkBytes)
	benchStep(b, "profiling the client-side agent")
	profileAgent(b, paths[1], a1.cmd.Process.Pid, "agent n1 (client side), hms-node path")
}

// fortioRound runs fortio at 1000 qps over 4 keep-alive connections for
// secs seconds and returns its percentiles (ms), achieved rate, and the CPU
// of the path's proxies in vCPU per 1000 requests/s.
func fortioRound(b *testing.B, p *mtlsPath, secs int) map[string]float64 {
	b.Helper()
	cpu0 := make([]time.Duration, len(p.pids))
	for i, pid := range p.pids {
		cpu0[i] = procCPU(b, pid)
	}
	t0 := time.Now()
	wait := startFortio(ctxT(b, time.Duration(secs)*time.Second+time.Minute), b, p.client,
		"-qps", "1000", "-c", "4", "-t", fmt.Sprintf("%ds", secs), p.url)
	r := wait()
	el := time.Since(t0).Seconds()
	r.check(b, p.name, len(mtlsBody)+len(" path=/b\n"))
	out := map[string]float64{"p50": r.Duration.pct(50) * 1e3, "p90": r.Duration.pct(90) * 1e3,
		"p99": r.Duration.pct(99) * 1e3, "qps": r.ActualQPS}
	for i, pid := range p.pids {
		vcpu := (procCPU(b, pid) - cpu0[i]).Seconds() / el
		out[fmt.Sprintf("cpu%d", i)] = vcpu / (r.ActualQPS / 1000)
	}
	return out
}

// bulkOnce moves n bytes down one stream and returns MB/s.
func bulkOnce(b *testing.B, p *mtlsPath, n int64) float64 {
	b.Helper()
	out, err := run(b, p.client, testApp, "bulk", "--addr", p.bulkAddr, "--dir", "sink", "--bytes", fmt.Sprint(n))
	if err != nil {
		b.Fatalf("%s bulk: %v\n%s", p.name, err, out)
	}
	var r struct {
		Bytes int64   `json:"bytes"`
		MBps  float64 `json:"mbps"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Bytes != n {
		b.Fatalf("%s bulk output %q: %v", p.name, out, err)
	}
	return r.MBps
}

// profileAgent samples an agent with perf (cpu-clock, call graphs by frame
// pointer) for 10 s of the fixed-rate load on p, and prints where its
// samples fall: kernel or agent binary, then the agent's hottest Go
// functions by self and by inclusive time. It prints a note instead when
// perf is missing or refuses, or HMS_BENCH_PERF=0.
func profileAgent(b *testing.B, p *mtlsPath, pid int, what string) {
	b.Helper()
	perf, err := exec.LookPath("perf")
	if err != nil || os.Getenv("HMS_BENCH_PERF") == "0" {
		fmt.Println("\nagent CPU profile: skipped (perf not installed or HMS_BENCH_PERF=0)")
		return
	}
	data := filepath.Join(b.TempDir(), "perf.data")
	wait := startFortio(ctxT(b, 2*time.Minute), b, p.client, "-qps", "1000", "-c", "4", "-t", "14s", p.url)
	time.Sleep(2 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, perf, "record", "-e", "cpu-clock", "-F", "999", "-g", "-p", fmt.Sprint(pid),
		"-o", data, "--", "sleep", "10").CombinedOutput()
	wait()
	if err != nil {
		fmt.Printf("\nagent CPU profile: skipped, perf record failed: %v\n%s\n", err, tail(string(out), 500))
		return
	}
	report := func(title string, limit int, args ...string) {
		argv := append([]string{"report", "-i", data, "--stdio", "-g", "none", "--percent-limit", "0.5"}, args...)
		out, err := exec.CommandContext(ctx, perf, argv...).CombinedOutput()
		if err != nil {
			fmt.Printf("perf report %v: %v\n", args, err)
			return
		}
		fmt.Println(title)
		n := 0
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSuffix(strings.Join(strings.Fields(l), " "), " - -") // perf pads and adds empty IPC columns
			if l == "" || strings.HasPrefix(l, "#") || n >= limit || profileFrame(l) {
				continue
			}
			fmt.Println("  " + l)
			n++
		}
	}
	fmt.Printf("\nCPU profile of %s under 1000 qps: perf cpu-clock 999 Hz for 10 s\n", what)
	report("share by object:", 8, "--no-children", "--sort", "dso")
	report("hms-node functions, self time (share of the agent's user-space samples):", 20,
		"--no-children", "--sort", "symbol", "--dsos", "hms-node", "--percentage", "relative")
	report("hms-node functions, inclusive time (share of all samples):", 25,
		"--children", "--sort", "symbol", "--dsos", "hms-node")
	if os.Getenv("HMS_BENCH_PERF_KEEP") != "" { // a path prefix: keep perf.data for perf report by hand
		exec.Command("cp", data, os.Getenv("HMS_BENCH_PERF_KEEP")+"."+p.name).Run()
	}
}

// profileFrame reports whether a perf line is a goroutine's entry frame,
// which every sample below it shares and so names nothing.
func profileFrame(l string) bool {
	return strings.HasSuffix(l, "runtime.goexit.abi0") || strings.HasSuffix(l, "runtime.mcall") || strings.Contains(l, ".gowrap")
}
