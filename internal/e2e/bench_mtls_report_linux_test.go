package e2e

import (
	"fmt"
	"os"
)

// Bars of the mTLS benchmark: less added latency than the HAProxy pair at
// p50 and p90, and at most 0.05 vCPU per 1000 requests/s per agent; Istio
// ambient's published figures are the aim.
const (
	mtlsCPUBar       = 0.05
	istioAddedP90Ms  = 0.17
	istioAddedP99Ms  = 0.20
	mtlsBenchConns   = 4
	mtlsBenchQPS     = 1000
	mtlsBenchPayload = "1 KiB response body"
)

// addedMs is the median over rounds of path's percentile minus direct's in
// the same round.
func addedMs(res map[string]map[string][]float64, path, k string) float64 {
	d, p := res["direct"][k], res[path][k]
	diff := make([]float64, len(p))
	for i := range p {
		diff[i] = p[i] - d[i]
	}
	return median(diff)
}

func printMTLSTable(res map[string]map[string][]float64, rounds, secs int, bulk int64) {
	w := os.Stdout
	fmt.Fprintf(w, "\nCross-node HTTP/1.1 keep-alive, %s, fortio %d qps over %d connections, %d s per round, median of %d rounds\n",
		mtlsBenchPayload, mtlsBenchQPS, mtlsBenchConns, secs, rounds)
	fmt.Fprintf(w, "%-9s %7s %9s %9s %9s %9s %9s %9s %12s\n", "path", "qps", "p50 (ms)", "p90 (ms)", "p99 (ms)", "+p50", "+p90", "+p99", "bulk (MB/s)")
	for _, name := range []string{"direct", "hms-node", "haproxy"} {
		m := res[name]
		added := func(k string) string {
			if name == "direct" {
				return "-"
			}
			return fmt.Sprintf("%+.3f", addedMs(res, name, k))
		}
		fmt.Fprintf(w, "%-9s %7.1f %9.3f %9.3f %9.3f %9s %9s %9s %12.1f\n", name, median(m["qps"]), median(m["p50"]), median(m["p90"]), median(m["p99"]),
			added("p50"), added("p90"), added("p99"), median(m["bulk"]))
	}
	fmt.Fprintf(w, "\nProxy cost (CPU over each round from /proc/<pid>/stat, median; RSS after the last round); bulk: one stream of %d MiB\n", bulk>>20)
	fmt.Fprintf(w, "%-9s %-22s %24s %10s\n", "path", "process", "vCPU per 1000 req/s", "RSS (MiB)")
	for _, row := range []struct{ path, proc, k string }{
		{"hms-node", "agent n1 (client side)", "0"}, {"hms-node", "agent n2 (server side)", "1"},
		{"haproxy", "haproxy client pod", "0"}, {"haproxy", "haproxy server pod", "1"},
	} {
		m := res[row.path]
		fmt.Fprintf(w, "%-9s %-22s %24.4f %10.1f\n", row.path, row.proc, median(m["cpu"+row.k]), median(m["rss"+row.k]))
	}
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	h := res["hms-node"]
	fmt.Fprintf(w, "\nhms-node added p50 %+.3f ms vs haproxy %+.3f ms: %s\n", addedMs(res, "hms-node", "p50"), addedMs(res, "haproxy", "p50"),
		verdict(addedMs(res, "hms-node", "p50") < addedMs(res, "haproxy", "p50")))
	fmt.Fprintf(w, "hms-node added p90 %+.3f ms vs haproxy %+.3f ms: %s\n", addedMs(res, "hms-node", "p90"), addedMs(res, "haproxy", "p90"),
		verdict(addedMs(res, "hms-node", "p90") < addedMs(res, "haproxy", "p90")))
	for i, side := range []string{"n1", "n2"} {
		c := median(h[fmt.Sprintf("cpu%d", i)])
		fmt.Fprintf(w, "agent %s CPU %.4f vCPU per 1000 req/s (bar ≤ %.2f): %s\n", side, c, mtlsCPUBar, verdict(c <= mtlsCPUBar))
	}
	fmt.Fprintf(w, "aim (Istio ambient, published): +%.2f ms p90, +%.2f ms p99; hms-node: %+.3f ms p90, %+.3f ms p99\n",
		istioAddedP90Ms, istioAddedP99Ms, addedMs(res, "hms-node", "p90"), addedMs(res, "hms-node", "p99"))
}
