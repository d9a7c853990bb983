package e2e

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testapp"
	"github.com/hms-node/hms-node/internal/testbed"
)

// inPod runs a command in a pod whose resolver is the mesh's (DNS goes
// to the agent), like curlByName.
func (m *twoNodes) inPod(t *testing.T, p *testbed.Pod, args ...string) (string, error) {
	t.Helper()
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return run(t, p, "unshare", "-m", "sh", "-c", "mount --bind "+m.resolv+" /etc/resolv.conf && exec "+strings.Join(q, " "))
}

// load runs hms-testapp hload in a pod against url and decodes its result.
func (m *twoNodes) load(t *testing.T, p *testbed.Pod, url string, qps float64, conc int, d time.Duration) testapp.LoadResult {
	t.Helper()
	out, err := m.inPod(t, p, testApp, "hload", "--addr", url, "--qps", fmt.Sprint(qps), "--conc", fmt.Sprint(conc), "--duration", d.String())
	if err != nil {
		t.Fatalf("hload: %v\n%s", err, out)
	}
	var res testapp.LoadResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("hload output %q: %v", out, err)
	}
	return res
}

// appCount asks a test server, directly inside its pod, how many
// requests it served.
func appCount(t *testing.T, p *testbed.Pod, port int) int {
	t.Helper()
	out, err := curl(t, p, fmt.Sprintf("http://127.0.0.1:%d/count", port))
	if err != nil {
		t.Fatalf("count on %s: %v %s", p.Name, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("count on %s: %q", p.Name, out)
	}
	return n
}

func appAdmin(t *testing.T, p *testbed.Pod, port int, path string) {
	t.Helper()
	if out, err := curl(t, p, fmt.Sprintf("http://127.0.0.1:%d%s", port, path)); err != nil {
		t.Fatalf("admin %s on %s: %v %s", path, p.Name, err, out)
	}
}

// httpService runs `hms-testapp http` (body text) in a pod of n2 enrolled
// as svc on port 7000, enrolls a client pod on n1, and waits until the
// client reaches svc by name. The manifest is applied by the caller.
func (m *twoNodes) httpService(t *testing.T, svc, body string) (client, srv *testbed.Pod) {
	t.Helper()
	client, srv = m.n1.MustAddPod(t, "client"), m.n2.MustAddPod(t, body)
	startServer(t, srv, 7000, testApp, "http", "--addr", ":7000", "--body", body)
	m.a1.enroll(client, "client")
	m.a2.enroll(srv, svc, 7000)
	waitFor(t, 10*time.Second, svc+" healthy", func() bool { return m.control.healthyInstances(svc) == 1 })
	m.waitCallByName(t, client, "http://"+svc+".svc/")
	return client, srv
}

// waitCallByName waits until a call by name reaches a test app (its reply
// names the path), not merely until curl gets some HTTP answer.
func (m *twoNodes) waitCallByName(t *testing.T, client *testbed.Pod, url string) {
	t.Helper()
	waitFor(t, 10*time.Second, "a call to "+url, func() bool {
		out, err := m.curlByName(t, client, url)
		return err == nil && strings.Contains(out, " path=/")
	})
}

// waitPort waits until a server in the pod accepts on port.
func waitPort(t *testing.T, p *testbed.Pod, port int) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%s:%d to listen", p.Name, port), func() bool {
		_, err := run(t, p, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port))
		return err == nil
	})
}

// status of a curl through the mesh: "<code> <seconds>".
func (m *twoNodes) curlStatus(t *testing.T, p *testbed.Pod, url string, extra ...string) (code int, secs float64, headers string) {
	t.Helper()
	args := append([]string{"curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10", "-w", "\n%{http_code} %{time_total}"}, extra...)
	out, err := m.inPod(t, p, append(args, url)...)
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", url, err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fmt.Sscanf(lines[len(lines)-1], "%d %f", &code, &secs)
	return code, secs, strings.Join(lines[:len(lines)-1], "\n")
}

// Three instances on two nodes under steady load; one instance's process
// is killed mid-run: the client sees no failed GET, because the proxy
// retries on another endpoint until the probe takes the dead one out.
func TestPrivilegedHTTPInstanceKillNoFailedGET(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: notify-svc\nport: 7000\nprotocol: http\nhealth: {path: /healthz, interval: 1s}\nmesh: {retries: 2}\n")
	client := m.n1.MustAddPod(t, "client")
	pa, pb, pc := m.n1.MustAddPod(t, "notify-a"), m.n2.MustAddPod(t, "notify-b"), m.n2.MustAddPod(t, "notify-c")
	startServer(t, pa, 7000, testApp, "http", "--addr", ":7000", "--body", "notify-a")
	cmdB, err := pb.Start(ctxT(t, 5*time.Minute), testApp, "http", "--addr", ":7000", "--body", "notify-b")
	if err != nil {
		t.Fatal(err)
	}
	waitPort(t, pb, 7000)
	startServer(t, pc, 7000, testApp, "http", "--addr", ":7000", "--body", "notify-c")
	m.a1.enroll(client, "client")
	m.a1.enroll(pa, "notify-svc", 7000)
	m.a2.enroll(pb, "notify-svc", 7000)
	m.a2.enroll(pc, "notify-svc", 7000)
	waitFor(t, 10*time.Second, "three healthy instances", func() bool { return m.control.healthyInstances("notify-svc") == 3 })
	m.waitCallByName(t, client, "http://notify-svc.svc/")

	go func() {
		time.Sleep(2 * time.Second)
		cmdB.Process.Signal(syscall.SIGKILL)
	}()
	res := m.load(t, client, "http://notify-svc.svc/x", 100, 4, 6*time.Second)
	t.Logf("load across the kill: %+v", res)
	if res.Errors != 0 || res.Codes["200"] != res.Sent || res.Sent < 500 {
		t.Fatalf("failed GETs across an instance kill: %+v", res)
	}
	if a, c := appCount(t, pa, 7000), appCount(t, pc, 7000); a == 0 || c == 0 {
		t.Fatalf("load not spread: a=%d c=%d", a, c)
	}
}

// Five 503s in a row open the circuit: the next call is answered 503 with
// x-hms-circuit: open without reaching the backend; after reset_seconds
// one trial closes it again.
func TestPrivilegedCircuitBreakerOpensAndCloses(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: flaky-svc\nport: 7000\nprotocol: http\nmesh:\n  circuit_breaker: {max_failures: 5, reset_seconds: 2}\n")
	client, srv := m.httpService(t, "flaky-svc", "flaky")

	appAdmin(t, srv, 7000, "/admin/fail?code=503")
	for i := range 5 {
		if code, _, h := m.curlStatus(t, client, "http://flaky-svc.svc/x"); code != 503 || strings.Contains(strings.ToLower(h), "x-hms-circuit") {
			t.Fatalf("failure %d: %d\n%s", i, code, h)
		}
	}
	before := appCount(t, srv, 7000)
	code, _, h := m.curlStatus(t, client, "http://flaky-svc.svc/x")
	if code != 503 || !strings.Contains(strings.ToLower(h), "x-hms-circuit: open") {
		t.Fatalf("after 5 failures: %d\n%s", code, h)
	}
	if after := appCount(t, srv, 7000); after != before {
		t.Fatalf("the open circuit reached the backend: %d → %d requests", before, after)
	}
	appAdmin(t, srv, 7000, "/admin/ok")
	time.Sleep(2100 * time.Millisecond)
	if code, _, h := m.curlStatus(t, client, "http://flaky-svc.svc/x"); code != 200 {
		t.Fatalf("trial after reset_seconds: %d\n%s", code, h)
	}
	for i := range 3 {
		if code, _, _ := m.curlStatus(t, client, "http://flaky-svc.svc/x"); code != 200 {
			t.Fatalf("call %d after the trial closed it: %d", i, code)
		}
	}
}

// timeout: 800ms: a slower backend gets 504 with x-hms-timeout between
// 0.8 and 0.9 s; a route's override applies to its path only.
func TestPrivilegedTimeoutAndRouteOverride(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: slow-svc\nport: 7000\nprotocol: http\nmesh:\n  timeout: 800ms\n  routes:\n    - {path: /delay/1500ms, timeout: 3s}\n")
	client, _ := m.httpService(t, "slow-svc", "slow")

	best := 10.0 // the least of 3 tries: the proxy's answer, not the machine's noise
	for range 3 {
		code, secs, h := m.curlStatus(t, client, "http://slow-svc.svc/delay/2s")
		if code != 504 || !strings.Contains(strings.ToLower(h), "x-hms-timeout: 800ms") {
			t.Fatalf("slow call: %d\n%s", code, h)
		}
		best = min(best, secs)
	}
	t.Logf("504 after %.3f s", best)
	if best < 0.8 || best > 0.9 {
		t.Fatalf("504 after %.3f s, want 0.8–0.9 s", best)
	}
	if code, secs, h := m.curlStatus(t, client, "http://slow-svc.svc/delay/1500ms"); code != 200 || secs < 1.5 {
		t.Fatalf("route with a 3 s timeout: %d after %.2fs\n%s", code, secs, h)
	}
	if code, _, _ := m.curlStatus(t, client, "http://slow-svc.svc/delay/1s"); code != 504 {
		t.Fatalf("another path keeps the service timeout: %d", code)
	}
}

// `limit set limited-svc 50rps` under 200 rps offered from two client
// nodes: about 50 rps accepted, the rest 429 with Retry-After.
// (mesh.rate_limit stays in the dashboard test's manifest.)
func TestPrivilegedRateLimitAcrossClients(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: limited-svc\nport: 7000\nprotocol: http\n")
	c1, c2 := m.n1.MustAddPod(t, "client-1"), m.n2.MustAddPod(t, "client-2")
	srv := m.n2.MustAddPod(t, "limited")
	startServer(t, srv, 7000, testApp, "http", "--addr", ":7000", "--body", "limited")
	m.a1.enroll(c1, "client")
	m.a2.enroll(c2, "client")
	m.a2.enroll(srv, "limited-svc", 7000)
	waitFor(t, 10*time.Second, "limited-svc healthy", func() bool { return m.control.healthyInstances("limited-svc") == 1 })
	waitFor(t, 10*time.Second, "calls by name", func() bool {
		_, e1 := m.curlByName(t, c1, "http://limited-svc.svc/")
		_, e2 := m.curlByName(t, c2, "http://limited-svc.svc/")
		return e1 == nil && e2 == nil
	})
	if out, err := m.control.cli("limit", "set", "limited-svc", "50rps"); err != nil || !strings.Contains(out, "set to 50 rps") {
		t.Fatalf("limit set: %v\n%s", err, out)
	}
	// The limit reaches the callee's agent as a registry delta after the
	// CLI returns: wait until a probe far above 50 rps is refused in part.
	waitFor(t, 10*time.Second, "the limit to apply", func() bool {
		return m.load(t, c1, "http://limited-svc.svc/probe", 300, 8, 300*time.Millisecond).Codes["429"] > 0
	})
	time.Sleep(time.Second) // let the bucket refill after the probes
	const secs = 6
	before := appCount(t, srv, 7000)
	results := make(chan testapp.LoadResult, 2)
	for _, c := range []*testbed.Pod{c1, c2} {
		go func() { results <- m.load(t, c, "http://limited-svc.svc/x", 100, 8, secs*time.Second) }()
	}
	r1, r2 := <-results, <-results
	t.Logf("client 1: %+v\nclient 2: %+v", r1, r2)
	ok := r1.Codes["200"] + r2.Codes["200"]
	limited := r1.Codes["429"] + r2.Codes["429"]
	seconds := max(r1.Seconds, r2.Seconds)
	rate := float64(ok) / seconds
	t.Logf("accepted %.1f rps (%d in %.2fs), %d answered 429", rate, ok, seconds, limited)
	if rate < 45 || rate > 55 {
		t.Fatalf("accepted %.1f rps, want 50 ±10%%", rate)
	}
	if ok+limited != r1.Sent+r2.Sent || r1.RetryAfter+r2.RetryAfter != limited {
		t.Fatalf("every refused request must be a 429 with Retry-After: %+v %+v", r1, r2)
	}
	if served := appCount(t, srv, 7000) - before; served != ok {
		t.Fatalf("the application served %d, clients got %d 200s", served, ok)
	}
}

// With every instance failing, retries stay within the budget: requests
// reaching the instances ≤ 1.2 × the client's requests + the floor.
func TestPrivilegedRetryBudget(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: broken-svc\nport: 7000\nprotocol: http\nmesh: {retries: 3}\n")
	client := m.n1.MustAddPod(t, "client")
	p1, p2 := m.n2.MustAddPod(t, "broken-1"), m.n2.MustAddPod(t, "broken-2")
	for _, p := range []*testbed.Pod{p1, p2} {
		startServer(t, p, 7000, testApp, "http", "--addr", ":7000", "--body", p.Name)
		m.a2.enroll(p, "broken-svc", 7000)
	}
	m.a1.enroll(client, "client")
	waitFor(t, 10*time.Second, "broken-svc healthy", func() bool { return m.control.healthyInstances("broken-svc") == 2 })
	m.waitCallByName(t, client, "http://broken-svc.svc/")
	// The warm-up calls are in the budget's 10 s window too: each one
	// earned a fifth of a retry.
	warm := appCount(t, p1, 7000) + appCount(t, p2, 7000)
	appAdmin(t, p1, 7000, "/admin/fail?code=503")
	appAdmin(t, p2, 7000, "/admin/fail?code=503")
	before := appCount(t, p1, 7000) + appCount(t, p2, 7000)
	res := m.load(t, client, "http://broken-svc.svc/x", 0, 4, 4*time.Second)
	reached := appCount(t, p1, 7000) + appCount(t, p2, 7000) - before
	const floor = 10 * 10 // 10 retries/s over the 10 s budget window
	bound := res.Sent + (res.Sent+warm)*2/10 + floor
	t.Logf("client sent %d (all %v) after %d warm-up calls, instances got %d; bound %d+0.2×(%d+%d)+%d = %d; without a budget up to %d",
		res.Sent, res.Codes, warm, reached, res.Sent, res.Sent, warm, floor, bound, 4*res.Sent)
	if res.Sent < 300 {
		t.Fatalf("too few requests for the bound to mean anything: %d", res.Sent)
	}
	if reached > bound {
		t.Fatalf("retries multiplied the outage: %d requests reached the instances for %d sent", reached, res.Sent)
	}
	if reached <= res.Sent {
		t.Fatalf("no retries happened at all (%d for %d)", reached, res.Sent)
	}
}

// A server-first protocol (an SMTP-like banner) works through a tcp
// service and through auto without the proxy waiting for the client.
func TestPrivilegedServerFirstTCP(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: smtp-svc\nport: 2525\nprotocol: tcp\n---\nname: smtp-auto\nport: 2526\n")
	client, srv, srvAuto := m.n1.MustAddPod(t, "client"), m.n2.MustAddPod(t, "smtp"), m.n2.MustAddPod(t, "smtp-auto")
	startServer(t, srv, 2525, testApp, "banner", "--addr", ":2525", "--body", "smtp.hms")
	startServer(t, srvAuto, 2526, testApp, "banner", "--addr", ":2526", "--body", "smtp-auto.hms")
	m.a1.enroll(client, "client")
	m.a2.enroll(srv, "smtp-svc", 2525)
	m.a2.enroll(srvAuto, "smtp-auto", 2526)
	waitFor(t, 10*time.Second, "both healthy", func() bool {
		return m.control.healthyInstances("smtp-svc") == 1 && m.control.healthyInstances("smtp-auto") == 1
	})
	for _, tc := range []struct{ name, addr, banner string }{
		{"tcp", "smtp-svc.svc:2525", "220 smtp.hms ready"},
		{"auto", "smtp-auto.svc:2526", "220 smtp-auto.hms ready"},
	} {
		var out string
		var err error
		waitFor(t, 10*time.Second, tc.name+" banner", func() bool {
			out, err = m.inPod(t, client, testApp, "banner-client", "--addr", tc.addr)
			return err == nil
		})
		mustContain(t, out, `greeting="`+tc.banner+`"`)
		mustContain(t, out, `reply="250 HELO hms"`)
		var ms int
		fmt.Sscanf(out[strings.Index(out, "after_ms=")+len("after_ms="):], "%d", &ms)
		if ms > 1000 {
			t.Fatalf("%s: the greeting took %d ms: the proxy waited for the client", tc.name, ms)
		}
	}
}

// HTTP/1.1 and h2c through the proxy across nodes: keep-alive, chunked
// bodies, 100-continue, an upgraded connection, trace headers added and
// hop-by-hop headers dropped.
func TestPrivilegedHTTPFeaturesAcrossNodes(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: feat-svc\nport: 7000\nprotocol: http\n")
	client, srv := m.httpService(t, "feat-svc", "feat")
	curlIn := func(args ...string) string {
		t.Helper()
		out, err := m.inPod(t, client, append([]string{"curl", "-sS", "--max-time", "10"}, args...)...)
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return out
	}
	// Headers the application sees.
	out := curlIn("-H", "Connection: X-Hop", "-H", "X-Hop: secret", "-H", "Keep-Alive: timeout=5", "http://feat-svc.svc/headers")
	mustContain(t, out, "X-Hms-Trace-Id: ")
	mustContain(t, out, "Traceparent: 00-")
	if strings.Contains(out, "X-Hop") || strings.Contains(out, "Keep-Alive") {
		t.Fatalf("hop-by-hop headers reached the application:\n%s", out)
	}
	out = curlIn("-H", "X-Hms-Trace-Id: abc123", "http://feat-svc.svc/headers")
	mustContain(t, out, "X-Hms-Trace-Id: abc123")
	// h2c with prior knowledge.
	out = curlIn("--http2-prior-knowledge", "-w", "\nproto=%{http_version}", "http://feat-svc.svc/h2")
	mustContain(t, out, "feat path=/h2")
	mustContain(t, out, "proto=2")
	// Keep-alive: two requests, one connection.
	out = curlIn("-w", "\nconnects=%{num_connects}\n", "http://feat-svc.svc/a", "http://feat-svc.svc/b")
	mustContain(t, out, "feat path=/a")
	mustContain(t, out, "feat path=/b")
	if strings.Count(out, "connects=1") != 1 || strings.Count(out, "connects=0") != 1 {
		t.Fatalf("keep-alive not kept:\n%s", out)
	}
	// A chunked request body, and one sent after 100-continue.
	out = curlIn("-H", "Transfer-Encoding: chunked", "--data-binary", "chunked-body", "http://feat-svc.svc/echo")
	mustContain(t, out, "echo=chunked-body")
	big := strings.Repeat("x", 100<<10) // above the replay buffer: streamed, not buffered
	out = curlIn("-D", "-", "-H", "Expect: 100-continue", "--data-binary", big, "http://feat-svc.svc/echo")
	mustContain(t, out, "HTTP/1.1 100 Continue")
	if !strings.Contains(out, "echo="+big+"\n") {
		t.Fatalf("100-continue body: %d bytes back, want the %d sent", len(out), len(big))
	}
	// An upgraded connection (WebSocket-style) passes through.
	out, err := m.inPod(t, client, testApp, "upgrade-client", "--addr", "feat-svc.svc:7000", "--name", "feat-svc.svc", "--body", "ping")
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	mustContain(t, out, `upgraded=hms-echo echo="echo ping"`)
	// hms-node curl from the host, sent as the node's client workload.
	out, err = m.a1.cli("curl", "feat-svc", "/from-host", "-i")
	if err != nil {
		t.Fatalf("hms-node curl: %v\n%s", err, out)
	}
	mustContain(t, out, "HTTP 200 (from default/client, endpoint "+srv.IP.String()+":7000")
	mustContain(t, out, "feat path=/from-host")
	out, err = m.a1.cli("curl", "feat-svc", "/status/503", "-o", "json", "--fail")
	if err == nil || !strings.Contains(out, `"status": 503`) || !strings.Contains(out, "answered 503") {
		t.Fatalf("hms-node curl --fail on a 503: err=%v\n%s", err, out)
	}
	if out, err := m.a1.cli("curl", "feat-svc", "/", "--from", "nope"); err == nil || !strings.Contains(out, `no workload of "nope"`) {
		t.Fatalf("curl --from an unknown workload: err=%v %s", err, out)
	}
}
