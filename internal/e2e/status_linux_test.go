package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// statusText is `hms-node status` for a person; it must fit 80 columns.
func statusText(t *testing.T, a *agentProc) string {
	t.Helper()
	out, err := a.cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for i, line := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Errorf("status line %d is %d columns: %q", i+1, n, line)
		}
	}
	return out
}

// statusJSON is `hms-node status -o json` decoded loosely, to check its
// shape as a script would see it.
func statusJSON(t *testing.T, a *agentProc) map[string]any {
	t.Helper()
	out, err := a.cli("status", "-o", "json")
	if err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("status -o json %q: %v", out, err)
	}
	return v
}

func mustContainAll(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// A healthy node, the same node with a circuit open, then with the
// control plane stopped: status says so in both forms, within 80 columns.
func TestPrivilegedStatus(t *testing.T) {
	m, client := startObserved(t)
	m.control.apply("name: flaky-svc\nport: 7000\nprotocol: http\nmesh:\n  circuit_breaker: {max_failures: 3, reset_seconds: 300}\n")
	flaky := m.n2.MustAddPod(t, "flaky")
	startServer(t, flaky, 7000, testApp, "http", "--addr", ":7000", "--body", "flaky")
	m.a2.enroll(flaky, "flaky-svc", 7000)
	waitFor(t, 10*time.Second, "flaky-svc healthy", func() bool { return m.control.healthyInstances("flaky-svc") == 1 })
	// The node's top destinations count the warm-up's calls too: compare.
	before := topDestination(statusJSON(t, m.a1), "default/notify-svc")
	m.callPattern(t, client)
	checkHealthyStatus(t, m, before)

	// A circuit open: three 503s in a row from flaky-svc.
	appAdmin(t, flaky, 7000, "/admin/fail?code=503")
	for range 4 {
		m.curlStatus(t, client, "http://flaky-svc.svc/x")
	}
	txt := statusText(t, m.a1)
	t.Logf("status with a circuit open:\n%s", txt)
	mustContainAll(t, "status", txt, "CIRCUITS (1 not closed)\n  default/flaky-svc  open")
	if !hasRow(txt, "default/flaky-svc", "4", "4", "100.0%") {
		t.Errorf("no top-destination row for flaky-svc with 4 requests, all 5xx")
	}
	circuits, _ := statusJSON(t, m.a1)["circuits"].(map[string]any)
	if len(circuits) != 1 || circuits["default/flaky-svc"] != "open" {
		t.Errorf("circuits %v, want default/flaky-svc open", circuits)
	}

	// The control plane stopped.
	m.control.stop()
	waitFor(t, 10*time.Second, "agent 1 to see the control plane gone", func() bool {
		st, err := m.a1.status()
		return err == nil && st.Registry != nil && !st.Registry.Connected
	})
	txt = statusText(t, m.a1)
	t.Logf("status with the control plane stopped:\n%s", txt)
	mustContainAll(t, "status", txt, "Registry  DISCONNECTED from "+m.control.addr, "serving the last known state")
	checkDesignShape(t, statusJSON(t, m.a1), "n1", 25)
}

// checkHealthyStatus: both nodes after the call pattern; before is the
// client node's count for notify-svc ahead of it.
func checkHealthyStatus(t *testing.T, m *observedMesh, before map[string]float64) {
	txt := statusText(t, m.a1)
	t.Logf("status of a healthy node:\n%s", txt)
	mustContainAll(t, "status", txt, "Node      n1", "Kernel    cgroup/connect4", "Registry  connected to "+m.control.addr,
		"WORKLOADS (2)", "default/client", "identity spiffe://cluster.local/ns/default/sa/client",
		"cert     expires", "), ok", "CIRCUITS (0 not closed)", "TOP DESTINATIONS (last minute)", "PROGRAM", "COUNTERS")
	st := statusJSON(t, m.a1)
	checkDesignShape(t, st, "n1", 25)
	after := topDestination(st, "default/notify-svc")
	if after["requests"]-before["requests"] != 25 || after["errors"]-before["errors"] != 5 {
		t.Errorf("top destination notify-svc went from %v to %v; want 25 more requests, 5 more errors", before, after)
	}
	req, errs := after["requests"], after["errors"]
	pct := fmt.Sprintf("%.1f%%", 100*errs/req)
	if !hasRow(txt, "default/notify-svc", fmt.Sprint(req), fmt.Sprint(errs), pct) {
		t.Errorf("no top-destination row for notify-svc with %v requests, %v 5xx, %s:\n%s", req, errs, pct, txt)
	}
	reg, _ := st["registry"].(map[string]any)
	if age, _ := reg["sync_age_seconds"].(float64); reg["connected"] != true || age < 0 {
		t.Errorf("registry %v", reg)
	}
	dst := statusText(t, m.a2)
	t.Logf("status of the destination node:\n%s", dst)
	mustContainAll(t, "status of n2", dst, "WORKLOADS (3)", "identity spiffe://cluster.local/ns/default/sa/notify-svc",
		"default/echo", "default/flaky-svc", "TOP DESTINATIONS (last minute)\n  none")
	checkDesignShape(t, statusJSON(t, m.a2), "n2", 0) // calls nothing: no redirects
}

// topDestination is one service's requests and errors in status's
// top_destinations (zero when absent).
func topDestination(st map[string]any, service string) map[string]float64 {
	top, _ := st["top_destinations"].([]any)
	for _, d := range top {
		if d, _ := d.(map[string]any); d["service"] == service {
			r, _ := d["requests"].(float64)
			e, _ := d["errors"].(float64)
			return map[string]float64{"requests": r, "errors": e}
		}
	}
	return map[string]float64{"requests": 0, "errors": 0}
}

// hasRow reports a top-destination row: the service, its requests, any
// rate, its 5xx and error percentage.
func hasRow(txt, service, requests, errs, pct string) bool {
	for _, line := range strings.Split(txt, "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] == service && f[1] == requests && f[3] == errs && f[4] == pct {
			return true
		}
	}
	return false
}

// checkDesignShape checks what DESIGN §7 promises of status -o json, and
// that the node redirected at least minRedirected connects.
func checkDesignShape(t *testing.T, st map[string]any, node string, minRedirected float64) {
	t.Helper()
	if st["node"] != node {
		t.Errorf("node %v, want %s", st["node"], node)
	}
	wls, ok := st["workloads"].([]any)
	if !ok || len(wls) == 0 {
		t.Fatalf("workloads %v", st["workloads"])
	}
	for _, w := range wls {
		wl, _ := w.(map[string]any)
		for _, k := range []string{"netns", "service", "namespace", "identity", "cert_expiry"} {
			if _, ok := wl[k].(string); !ok {
				t.Errorf("workload %v: %s is not a string", wl, k)
			}
		}
	}
	dp, _ := st["datapath"].(map[string]any)
	counters, _ := dp["counters"].(map[string]any)
	if r, ok := counters["redirected"].(float64); !ok || r < minRedirected {
		t.Errorf("datapath.counters.redirected = %v", counters["redirected"])
	}
}
