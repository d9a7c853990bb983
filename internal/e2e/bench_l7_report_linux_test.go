package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// l7TargetUs is the bar: the L7 features cost at most 50 µs of
// p50 over the L4 path through the same agents.
const l7TargetUs = 50

// l7Load runs fortio on path p (qps 0: closed loop) over conns keep-alive
// connections for secs seconds, fails b unless every call was a 200 with
// the 1 KiB body, and returns the percentiles (µs), the achieved rate,
// and per agent of the path the vCPU it used (cpuN) and its CPU seconds
// per 1000 requests, i.e. vCPU per 1000 req/s (cpukN).
func l7Load(b *testing.B, p *mtlsPath, qps, conns, secs int) map[string]float64 {
	b.Helper()
	cpu0 := make([]time.Duration, len(p.pids))
	for i, pid := range p.pids {
		cpu0[i] = procCPU(b, pid)
	}
	wait := startFortio(ctxT(b, time.Duration(secs)*time.Second+time.Minute), b, p.client,
		"-qps", fmt.Sprint(qps), "-c", fmt.Sprint(conns), "-t", fmt.Sprintf("%ds", secs), p.url)
	r := wait()
	r.check(b, fmt.Sprintf("%s at qps %d over %d connections", p.name, qps, conns), len(mtlsBody)+len(" path=/b\n"))
	out := map[string]float64{"p50": r.Duration.pct(50) * 1e6, "p90": r.Duration.pct(90) * 1e6,
		"p99": r.Duration.pct(99) * 1e6, "qps": r.ActualQPS}
	for i, pid := range p.pids {
		used := (procCPU(b, pid) - cpu0[i]).Seconds()
		out[fmt.Sprintf("cpu%d", i)] = used / (float64(r.ActualDuration) / 1e9)
		out[fmt.Sprintf("cpuk%d", i)] = used / float64(r.Duration.Count) * 1000
	}
	return out
}

// roundDiff is the median over rounds of path a's figure k minus path
// b's in the same round.
func roundDiff(res map[string]map[string][]float64, a, b, k string) (med float64, each []float64) {
	x, y := res[a][k], res[b][k]
	for i := range x {
		each = append(each, x[i]-y[i])
	}
	return median(each), each
}

func printL7Table(res map[string]map[string][]float64, rounds, secs, maxSecs int) {
	w := os.Stdout
	med := func(path, k string) float64 {
		if v := res[path][k]; len(v) > 0 {
			return median(v)
		}
		return 0
	}
	fmt.Fprintf(w, "\nL7 vs L4 through the same two agents: cross-node HTTP/1.1 keep-alive, GET, 1 KiB response body, median of %d rounds\n", rounds)
	fmt.Fprintf(w, "\nFixed rate: fortio 1000 qps over 4 connections, %d s per round\n", secs)
	fmt.Fprintf(w, "%-7s %7s %9s %9s %9s %10s %10s %13s %13s\n", "path", "qps", "p50 (µs)", "p90 (µs)", "p99 (µs)",
		"+p50 (µs)", "+p99 (µs)", "n1 vCPU/krps", "n2 vCPU/krps")
	for _, name := range l7BenchPaths {
		added, cpu := func(k string) string { return "-" }, func(string) string { return "-" }
		if name != "direct" {
			added = func(k string) string { d, _ := roundDiff(res, name, "direct", k); return fmt.Sprintf("%+.0f", d) }
			cpu = func(k string) string { return fmt.Sprintf("%.4f", med(name, k)) }
		}
		fmt.Fprintf(w, "%-7s %7.1f %9.0f %9.0f %9.0f %10s %10s %13s %13s\n", name, med(name, "qps"), med(name, "p50"), med(name, "p90"),
			med(name, "p99"), added("p50"), added("p99"), cpu("cpuk0"), cpu("cpuk1"))
	}
	d50, each50 := roundDiff(res, "l7", "l4", "p50")
	d99, each99 := roundDiff(res, "l7", "l4", "p99")
	fmt.Fprintf(w, "(+p50, +p99: vs direct in the same round)\nL7 − L4 per round (µs): p50 %s (median %+.0f); p99 %s (median %+.0f)\n",
		signed(each50), d50, signed(each99), d99)

	fmt.Fprintf(w, "\nMaximum throughput: fortio -qps 0 (closed loop) over 16 connections, %d s per round; load generator, agents and server share the 2 vCPUs\n", maxSecs)
	fmt.Fprintf(w, "%-7s %9s %8s %9s %9s %8s %8s %13s %13s\n", "path", "req/s", "×direct", "p50 (µs)", "p99 (µs)",
		"n1 vCPU", "n2 vCPU", "n1 vCPU/krps", "n2 vCPU/krps")
	for _, name := range l7BenchPaths {
		cpu := func(string) string { return "-" }
		if name != "direct" {
			cpu = func(k string) string { return fmt.Sprintf("%.3f", med(name, "max_"+k)) }
		}
		fmt.Fprintf(w, "%-7s %9.0f %8.2f %9.0f %9.0f %8s %8s %13s %13s\n", name, med(name, "max_qps"),
			med(name, "max_qps")/med("direct", "max_qps"), med(name, "max_p50"), med(name, "max_p99"),
			cpu("cpu0"), cpu("cpu1"), cpu("cpuk0"), cpu("cpuk1"))
	}
	fmt.Fprintf(w, "l7 / l4 maximum req/s: %.2f\n", med("l7", "max_qps")/med("l4", "max_qps"))

	verdict := "PASS"
	if d50 > l7TargetUs {
		verdict = "MISS"
	}
	fmt.Fprintf(w, "\nL7 added p50 over L4: %+.0f µs (target ≤ %d µs): %s\n", d50, l7TargetUs, verdict)
	fmt.Fprintf(w, "L7 added p99 over L4: %+.0f µs\n", d99)
}

func signed(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%+.0f", x)
	}
	return strings.Join(s, " ")
}

// scrapeRequests sums an agent's istio_requests_total series whose
// destination_service_name is svc.
func scrapeRequests(b *testing.B, addr, svc string) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	var n float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "istio_requests_total{") && strings.Contains(l, `destination_service_name="`+svc+`"`) {
			v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			n += v
		}
	}
	return n
}
