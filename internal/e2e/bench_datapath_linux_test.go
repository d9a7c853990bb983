package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"testing"

	"github.com/hms-node/hms-node/internal/testbed"
)

// benchPair is a client and a server pod measured together.
type benchPair struct {
	name           string
	client, server *testbed.Pod
}

// BenchmarkPrivilegedDatapath compares, in one run and interleaved, a
// same-node pod-to-pod path without the mesh (direct) with the same path
// through the agent — acceleration on (the default: same-node L4
// connections move into the kernel once relayed up to date), on with the
// shortcut off (every byte through the agent's relay), and off: request/response latency for
// 64 B and 1 KiB messages and bulk throughput of one stream. Each figure is
// the median of the rounds; ratios are to direct.
func BenchmarkPrivilegedDatapath(b *testing.B) {
	testbed.RequirePrivileged(b)
	bed := testbed.New(b)
	var pairs []benchPair
	benchStep(b, "setting up direct, accel-on, accel-relay and accel-off pod pairs")
	for _, mode := range datapathModes {
		n := bed.MustAddNode(b, mode)
		p := benchPair{name: mode, client: n.MustAddPod(b, "c"), server: n.MustAddPod(b, "s")}
		startServer(b, p.server, 7000, testApp, "echo", "--addr", ":7000")
		startServer(b, p.server, 7001, testApp, "bulk-server", "--addr", ":7001")
		if mode != "direct" {
			a := newAgent(b, n, "--accel="+fmt.Sprint(mode != "accel-off"), "--l4-shortcut="+fmt.Sprint(mode == "accel-on"))
			a.start()
			a.enroll(p.client, "client")
			a.enroll(p.server, "server", 7000, 7001)
		}
		pairs = append(pairs, p)
	}
	rounds, rts := envInt("HMS_BENCH_ROUNDS", 5), envInt("HMS_BENCH_RTS", 20000)
	res := map[string]map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, p := range pairs {
			m := res[p.name]
			if m == nil {
				m = map[string][]float64{}
				res[p.name] = m
			}
			benchStep(b, "round %d/%d: %s", r+1, rounds, p.name)
			for _, size := range []int{64, 1024} {
				rr := runRR(b, p, size, rts)
				m[fmt.Sprintf("p50_%d", size)] = append(m[fmt.Sprintf("p50_%d", size)], rr.P50us)
				m[fmt.Sprintf("p99_%d", size)] = append(m[fmt.Sprintf("p99_%d", size)], rr.P99us)
			}
			m["bulk"] = append(m["bulk"], runBulk(b, p, 2<<30))
		}
	}
	printDatapathTable(res)
}

// datapathModes are the benchmark's paths, direct first.
var datapathModes = []string{"direct", "accel-on", "accel-relay", "accel-off"}

func runRR(b *testing.B, p benchPair, size, n int) struct{ P50us, P99us float64 } {
	out, err := run(b, p.client, testApp, "rr", "--addr", fmt.Sprintf("%s:7000", p.server.IP), "--size", fmt.Sprint(size), "--n", fmt.Sprint(n))
	if err != nil {
		b.Fatalf("%s rr: %v\n%s", p.name, err, out)
	}
	var r struct {
		P50us float64 `json:"p50_us"`
		P99us float64 `json:"p99_us"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		b.Fatalf("%s rr output %q: %v", p.name, out, err)
	}
	return struct{ P50us, P99us float64 }{r.P50us, r.P99us}
}

func runBulk(b *testing.B, p benchPair, bytes int64) float64 {
	out, err := run(b, p.client, testApp, "bulk", "--addr", fmt.Sprintf("%s:7001", p.server.IP), "--dir", "sink", "--bytes", fmt.Sprint(bytes))
	if err != nil {
		b.Fatalf("%s bulk: %v\n%s", p.name, err, out)
	}
	var r struct {
		Bytes int64   `json:"bytes"`
		MBps  float64 `json:"mbps"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Bytes != bytes {
		b.Fatalf("%s bulk output %q: %v", p.name, out, err)
	}
	return r.MBps
}

func envInt(name string, def int) int {
	var v int
	if _, err := fmt.Sscan(os.Getenv(name), &v); err == nil && v > 0 {
		return v
	}
	return def
}

func rtsOf(map[string]map[string][]float64) int { return envInt("HMS_BENCH_RTS", 20000) }

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func printDatapathTable(res map[string]map[string][]float64) {
	d := res["direct"]
	w := os.Stdout
	fmt.Fprintf(w, "\nSame-node pod -> pod, median of %d rounds (%d round trips per size, 2 GiB bulk)\n", len(d["bulk"]), rtsOf(res))
	fmt.Fprintf(w, "%-11s %14s %14s %14s %14s %16s\n", "path", "p50 64B (us)", "p99 64B (us)", "p50 1KiB (us)", "p99 1KiB (us)", "bulk (MB/s)")
	for _, mode := range datapathModes {
		m := res[mode]
		cell := func(k string) string {
			v := median(m[k])
			if mode == "direct" {
				return fmt.Sprintf("%.1f", v)
			}
			return fmt.Sprintf("%.1f (%.2fx)", v, v/median(d[k]))
		}
		fmt.Fprintf(w, "%-11s %14s %14s %14s %14s %16s\n", mode, cell("p50_64"), cell("p99_64"), cell("p50_1024"), cell("p99_1024"), cell("bulk"))
	}
	for _, mode := range datapathModes[1:] {
		m := res[mode]
		fmt.Fprintf(w, "%-11s added p50: %+.1f us (64 B), %+.1f us (1 KiB); bulk %.2fx direct\n", mode,
			median(m["p50_64"])-median(d["p50_64"]), median(m["p50_1024"])-median(d["p50_1024"]), median(m["bulk"])/median(d["bulk"]))
	}
}
