package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hms-node/hms-node/internal/testbed"
)

// chromium is Debian's package; no browser is downloaded.
const chromium = "/usr/bin/chromium"

const dashboardManifest = `name: notify-svc
port: 7000
protocol: http
mesh:
  circuit_breaker: {max_failures: 5, reset_seconds: 300}
  rate_limit: 500rps
---
name: ledger-svc
port: 7000
protocol: http
`

// dashMesh is a control plane with its HTTP listener on loopback, and two
// nodes: the client on n1 calls notify-svc and ledger-svc on n2.
type dashMesh struct {
	*twoNodes
	http                   string
	client, notify, ledger *testbed.Pod
}

func newDashMesh(t *testing.T) *dashMesh {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	dm := &dashMesh{http: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	m := &twoNodes{control: newControl(t, "--http-addr", dm.http), n1: bed.MustAddNode(t, "n1"), n2: bed.MustAddNode(t, "n2")}
	flags := []string{"--probe-interval", "500ms", "--dns-upstream", startFakeUpstream(t)}
	m.a1 = newAgent(t, m.n1, append(m.control.agentFlags(), flags...)...)
	m.a2 = newAgent(t, m.n2, append(m.control.agentFlags(), flags...)...)
	m.a1.start()
	m.a2.start()
	dm.twoNodes = m
	m.control.apply(dashboardManifest)
	dm.client, dm.notify, dm.ledger = m.n1.MustAddPod(t, "client"), m.n2.MustAddPod(t, "notify"), m.n2.MustAddPod(t, "ledger")
	startServer(t, dm.notify, 7000, testApp, "http", "--addr", ":7000", "--body", "notify")
	startServer(t, dm.ledger, 7000, testApp, "http", "--addr", ":7000", "--body", "ledger")
	m.a1.enroll(dm.client, "client")
	m.a2.enroll(dm.notify, "notify-svc", 7000)
	m.a2.enroll(dm.ledger, "ledger-svc", 7000)
	waitFor(t, 10*time.Second, "both services healthy", func() bool {
		return m.control.healthyInstances("notify-svc") == 1 && m.control.healthyInstances("ledger-svc") == 1
	})
	return dm
}

// load calls both services from the client pod, by VIP, about 20 times a
// second each, until the test ends.
func (dm *dashMesh) load(t *testing.T) {
	t.Helper()
	l, _ := dm.control.list()
	vips := map[string]string{}
	for _, s := range l.Services {
		vips[s.Name] = s.VIP
	}
	script := fmt.Sprintf(`while :; do curl -s -o /dev/null --max-time 2 http://%s/sms; curl -s -o /dev/null --max-time 2 http://%s/books; sleep 0.05; done`,
		vips["notify-svc"], vips["ledger-svc"])
	if _, err := dm.client.Start(ctxT(t, 5*time.Minute), "sh", "-c", script); err != nil {
		t.Fatal(err)
	}
}

// artifactDir is $HMS_ARTIFACTS, else the test's temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("HMS_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("HMS_ARTIFACTS: %v", err)
		}
		return d
	}
	return t.TempDir()
}

// newBrowser starts headless Chromium for the test: its own profile, no
// sandbox (we are root), and a resolver that resolves nothing, so it
// reaches only the IP literals it is given (loopback).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s: %v (install Debian's chromium package)", chromium, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox,
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1100),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx (not to a timeout)
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// js evaluates expr in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// edgeState is the call graph's state of an edge, "" when it is not drawn.
func edgeState(t *testing.T, ctx context.Context, from, to string) string {
	return js[string](t, ctx, fmt.Sprintf(`(() => { const e = document.querySelector('#graph g.edge[data-edge="%s->%s"]'); return e ? e.dataset.state : ""; })()`, from, to))
}

// waitText waits until the element's text holds every want, and returns it.
func waitText(t *testing.T, ctx context.Context, sel string, within time.Duration, want ...string) string {
	t.Helper()
	var got string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		got = js[string](t, ctx, fmt.Sprintf(`document.querySelector(%q).innerText`, sel))
		if containsAll(got, want) {
			break
		}
	}
	return got
}

func containsAll(s string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

func waitEdge(t *testing.T, ctx context.Context, from, to, want string, within time.Duration) {
	t.Helper()
	var got string
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if got = edgeState(t, ctx, from, to); got == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	table := js[string](t, ctx, `document.querySelector("#edges").innerText`)
	t.Fatalf("edge %s -> %s is %q after %s, want %q (are the agents' stats reaching the control plane?); edges table:\n%s",
		from, to, got, within, want, table)
}

// screenshot saves the whole page as a PNG artifact.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot saved: %s (%d bytes)", p, len(png))
}

// A real mesh in headless Chromium: the page lists the services with VIPs
// and instances, draws the live call graph, taps a service, and after a
// backend is broken shows its edge failing and its circuit open, all
// without a reload.
func TestPrivilegedDashboard(t *testing.T) {
	dm := newDashMesh(t)
	url := "http://" + dm.http + "/dashboard/"
	if out, err := dm.control.cli("dashboard", "--http-addr", dm.http, "--no-open"); err != nil || out != url+"\n" {
		t.Fatalf("hms-node dashboard: %v, printed %q, want %q", err, out, url)
	}
	closed := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	if out, err := dm.control.cli("dashboard", "--http-addr", closed, "--no-open"); err == nil ||
		!strings.Contains(out, "connection refused; start the control plane") {
		t.Errorf("hms-node dashboard with nothing listening: %v, printed %q", err, out)
	}
	dm.load(t)
	ctx := newBrowser(t)
	dir := artifactDir(t)
	t.Cleanup(func() {
		if t.Failed() {
			screenshot(t, ctx, dir, "dashboard-failure.png")
		}
	})
	bctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()

	// / sends the browser to the dashboard.
	if err := chromedp.Do(bctx, chromedp.Navigate("http://"+dm.http+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#services tr[data-service="default/notify-svc"]`))); err != nil {
		t.Fatalf("dashboard did not show notify-svc: %v", err)
	}
	js[bool](t, bctx, `window.hmsNoReload = true`)
	l, _ := dm.control.list()
	services := js[string](t, bctx, `document.querySelector("#services").innerText`)
	for _, s := range l.Services {
		mustContainAll(t, "services table", services, "default/"+s.Name, s.VIP, fmt.Sprintf("%s:%d on n2", s.Instances[0].IP, s.Instances[0].Port))
	}
	limits := js[string](t, bctx, `document.querySelector("#rate-limits").innerText`)
	mustContainAll(t, "rate limits", limits, "default/notify-svc", "500 req/s", "manifest")

	waitEdge(t, bctx, "default/client", "default/notify-svc", "ok", 20*time.Second)
	waitEdge(t, bctx, "default/client", "default/ledger-svc", "ok", 5*time.Second)
	label := js[string](t, bctx, `document.querySelector('#graph g.edge[data-edge="default/client->default/notify-svc"] text').textContent`)
	if !strings.Contains(label, "req/s") || !strings.Contains(label, "0% err") || !strings.Contains(label, "p99") {
		t.Errorf("edge label %q: want rate, error rate and p99", label)
	}
	// Each node's certificates come with its next 5 s stats: wait for them
	// on the live page rather than reading it once.
	certs := waitText(t, bctx, "#certs", 12*time.Second, "/ns/default/sa/notify-svc", "/node/n1", "in ")
	mustContainAll(t, "certificates", certs, "/ns/default/sa/notify-svc", "/node/n1", "in ")

	// The tap view follows notify-svc's calls.
	if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS(`#tap-service`), "default/notify-svc"),
		chromedp.Click(chromedp.CSS(`#tap-start`)),
		chromedp.WaitVisible(chromedp.CSS(`#tap tbody tr[data-status="200"]`))); err != nil {
		t.Fatalf("tap view shows no call: %v", err)
	}
	tapped := js[string](t, bctx, `document.querySelector("#tap tbody tr").innerText`)
	mustContainAll(t, "tapped call", tapped, "GET /sms", "default/client", "200")

	// Break notify-svc: every request now answers 503.
	appAdmin(t, dm.notify, 7000, "/admin/fail?code=503")
	waitEdge(t, bctx, "default/client", "default/notify-svc", "failing", 20*time.Second)
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(`#circuits tr[data-circuit="default/notify-svc"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#tap tbody tr[data-status="503"]`))); err != nil {
		t.Fatalf("no open circuit or 503 in the tap view: %v", err)
	}
	if s := edgeState(t, bctx, "default/client", "default/ledger-svc"); s != "ok" {
		t.Errorf("ledger-svc's edge is %q; only notify-svc was broken", s)
	}
	circuits := js[string](t, bctx, `document.querySelector("#circuits").innerText`)
	mustContainAll(t, "circuits", circuits, "default/notify-svc", "n1", "open")
	if !js[bool](t, bctx, `window.hmsNoReload === true && Number(document.body.dataset.updates) > 5`) {
		t.Error("the page reloaded, or got no live updates")
	}
	screenshot(t, bctx, dir, "dashboard.png")
}
