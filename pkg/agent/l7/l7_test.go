package l7

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/ratelimit"
	"github.com/hms-node/hms-node/pkg/agent/resilience"
	"github.com/hms-node/hms-node/pkg/api"
)

// backend is a real HTTP server on loopback standing for one endpoint.
type backend struct {
	srv  *httptest.Server
	ep   netip.AddrPort
	hits atomic.Int64
	// handle answers; nil = 200 "ok <name>"
	handle func(w http.ResponseWriter, r *http.Request)
}

func newBackend(t *testing.T, name string, handle func(w http.ResponseWriter, r *http.Request)) *backend {
	b := &backend{handle: handle}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		if b.handle != nil {
			b.handle(w, r)
			return
		}
		fmt.Fprintf(w, "ok %s\n", name)
	}))
	t.Cleanup(b.srv.Close)
	b.ep = netip.MustParseAddrPort(strings.TrimPrefix(b.srv.URL, "http://"))
	return b
}

// mesh is a Client in front of some backends, reached over a real
// loopback connection like an application's.
type mesh struct {
	t     *testing.T
	cl    *Client
	dst   *Destination
	pol   Policy
	eps   []netip.AddrPort
	down  map[netip.AddrPort]bool // refuse connects to these
	calls chan *api.Call
	addr  string
	mu    sync.Mutex
}

func newMesh(t *testing.T, pol Policy, bs ...*backend) *mesh {
	m := &mesh{t: t, pol: pol, down: map[netip.AddrPort]bool{}, calls: make(chan *api.Call, 1000)}
	for _, b := range bs {
		m.eps = append(m.eps, b.ep)
	}
	m.cl = &Client{Node: "n1", Breakers: resilience.NewBreakers(nil), Budgets: resilience.NewBudgets(0.2, 10, 10*time.Second),
		Record: func(c *api.Call) { m.calls <- c }}
	var rr atomic.Int64
	m.dst = &Destination{Namespace: "default", Service: "web", Principal: "spiffe://td/ns/default/sa/web",
		Policy: func() Policy { m.mu.Lock(); defer m.mu.Unlock(); return m.pol },
		Pick: func(tried []netip.AddrPort) (netip.AddrPort, func(error, time.Duration), bool) {
			for range len(m.eps) {
				ep := m.eps[int(rr.Add(1))%len(m.eps)]
				if !contains(tried, ep) {
					return ep, func(error, time.Duration) {}, true
				}
			}
			return netip.AddrPort{}, nil, false
		}}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		ep := netip.MustParseAddrPort(addr)
		m.mu.Lock()
		down := m.down[ep]
		m.mu.Unlock()
		if down {
			return nil, &ConnectError{Err: fmt.Errorf("connection refused")}
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go m.cl.ServeConn(c, Source{Workload: "default/client", Principal: "spiffe://td/ns/default/sa/client", Security: "mutual_tls"}, m.dst, senderFunc(func(r *http.Request, ep netip.AddrPort) (*http.Response, error) {
				return tr.RoundTrip(r)
			}))
		}
	}()
	m.addr = l.Addr().String()
	return m
}

type senderFunc func(*http.Request, netip.AddrPort) (*http.Response, error)

func (f senderFunc) RoundTrip(r *http.Request, ep netip.AddrPort) (*http.Response, error) {
	return f(r, ep)
}

func contains(s []netip.AddrPort, x netip.AddrPort) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

var client = &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}

func (m *mesh) get(path string, hdr ...string) (*http.Response, string) {
	m.t.Helper()
	return m.do("GET", path, "", hdr...)
}

func (m *mesh) do(method, path, body string, hdr ...string) (*http.Response, string) {
	m.t.Helper()
	req, _ := http.NewRequest(method, "http://"+m.addr+path, strings.NewReader(body))
	req.Host = "web.svc"
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		m.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func (m *mesh) lastCall() *api.Call {
	m.t.Helper()
	select {
	case c := <-m.calls:
		return c
	case <-time.After(5 * time.Second):
		m.t.Fatal("no call recorded")
		return nil
	}
}

func TestRetriesGoToAnotherEndpoint(t *testing.T) {
	bad := newBackend(t, "bad", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	good := newBackend(t, "good", nil)
	m := newMesh(t, Policy{Retries: 2}, bad, good)
	for i := range 10 {
		resp, body := m.get("/x")
		if resp.StatusCode != 200 || !strings.Contains(body, "ok good") {
			t.Fatalf("call %d: %d %q", i, resp.StatusCode, body)
		}
		c := m.lastCall()
		if c.Status != 200 || c.Endpoint != good.ep.String() {
			t.Fatalf("call %d recorded %+v", i, c)
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the failing endpoint was never tried: the test proves nothing")
	}
	// POST is not idempotent: a 503 is not retried unless the route asks.
	bad.handle = func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }
	good.handle = bad.handle
	before := bad.hits.Load() + good.hits.Load()
	resp, _ := m.do("POST", "/x", "payload")
	if resp.StatusCode != 503 || bad.hits.Load()+good.hits.Load()-before != 1 {
		t.Fatalf("POST: %d after %d attempts", resp.StatusCode, bad.hits.Load()+good.hits.Load()-before)
	}
}

func TestConnectFailureRetriedWhateverTheMethod(t *testing.T) {
	a, b := newBackend(t, "a", nil), newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "b got %s", body)
	})
	m := newMesh(t, Policy{Retries: 1}, a, b)
	m.down[a.ep] = true
	for range 4 {
		resp, body := m.do("POST", "/x", "replayed-body")
		if resp.StatusCode != 200 || body != "b got replayed-body" {
			t.Fatalf("POST after a connect failure: %d %q", resp.StatusCode, body)
		}
	}
	// Without retries a connect failure is a 503 flagged UF.
	m.mu.Lock()
	m.pol.Retries = 0
	m.eps = []netip.AddrPort{a.ep}
	m.mu.Unlock()
	for len(m.calls) > 0 {
		<-m.calls
	}
	resp, _ := m.get("/x")
	if c := m.lastCall(); resp.StatusCode != 503 || c.Flags != "UF" {
		t.Fatalf("connect failure: %d flags %q", resp.StatusCode, c.Flags)
	}
}

func TestTimeoutAnswers504(t *testing.T) {
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	m := newMesh(t, Policy{Timeout: 200 * time.Millisecond, Routes: []Route{{Path: "/long", Timeout: 5 * time.Second, Retries: -1}}}, slow)
	start := time.Now()
	resp, _ := m.get("/x")
	took := time.Since(start)
	if resp.StatusCode != 504 || resp.Header.Get(HeaderTimeout) != "200ms" {
		t.Fatalf("timeout: %d %q", resp.StatusCode, resp.Header.Get(HeaderTimeout))
	}
	if took < 200*time.Millisecond {
		t.Fatalf("answered before the timeout: %v", took)
	}
	if c := m.lastCall(); c.Flags != "UT" || c.Status != 504 {
		t.Fatalf("recorded %+v", c)
	}
	// The route's longer timeout applies to its path only.
	resp, _ = m.get("/long/y")
	if resp.StatusCode != 200 {
		t.Fatalf("route override: %d", resp.StatusCode)
	}
}

func TestCircuitOpensAndRecovers(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, "fine")
	})
	m := newMesh(t, Policy{BreakerFailures: 5, BreakerReset: 300 * time.Millisecond}, b)
	for range 5 {
		if resp, _ := m.get("/x"); resp.StatusCode != 503 || resp.Header.Get(HeaderCircuit) != "" {
			t.Fatalf("before opening: %d circuit=%q", resp.StatusCode, resp.Header.Get(HeaderCircuit))
		}
	}
	hits := b.hits.Load()
	resp, _ := m.get("/x")
	if resp.StatusCode != 503 || resp.Header.Get(HeaderCircuit) != "open" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("open circuit: %d %v", resp.StatusCode, resp.Header)
	}
	if b.hits.Load() != hits {
		t.Fatal("an open circuit reached the backend")
	}
	failing.Store(false)
	time.Sleep(350 * time.Millisecond)
	if resp, body := m.get("/x"); resp.StatusCode != 200 || body != "fine" {
		t.Fatalf("trial: %d %q", resp.StatusCode, body)
	}
	if resp, _ := m.get("/x"); resp.StatusCode != 200 {
		t.Fatalf("after the trial closed it: %d", resp.StatusCode)
	}
}

func TestTraceAndHopByHopHeaders(t *testing.T) {
	var got http.Header
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone() })
	m := newMesh(t, Policy{}, b)
	m.get("/x", "Connection", "X-Secret-Hop", "X-Secret-Hop", "1", "Keep-Alive", "timeout=5")
	id := got.Get(HeaderTraceID)
	tid, _, ok := parseTraceparent(got.Get("Traceparent"))
	if len(id) != 32 || !ok || tid != id {
		t.Fatalf("new trace: id %q traceparent %q", id, got.Get("Traceparent"))
	}
	if got.Get("X-Secret-Hop") != "" || got.Get("Keep-Alive") != "" {
		t.Fatalf("hop-by-hop headers passed: %v", got)
	}
	// Kept when the caller sent them; traceparent keeps the trace id.
	in := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	m.get("/x", HeaderTraceID, "my-trace", "Traceparent", in)
	tid, flags, _ := parseTraceparent(got.Get("Traceparent"))
	if got.Get(HeaderTraceID) != "my-trace" || tid != "4bf92f3577b34da6a3ce929d0e0e4736" || flags != "01" || got.Get("Traceparent") == in {
		t.Fatalf("propagated: %q %q", got.Get(HeaderTraceID), got.Get("Traceparent"))
	}
	if c := m.lastCall(); c.TraceId == "" {
		t.Fatal("no trace id recorded")
	}
}

func TestNoHealthyEndpoint(t *testing.T) {
	m := newMesh(t, Policy{})
	resp, _ := m.get("/x")
	if resp.StatusCode != 503 || resp.Header.Get(HeaderNoHealthy) == "" {
		t.Fatalf("no endpoint: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestRetryBudgetBoundsRetries(t *testing.T) {
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) })
	m := newMesh(t, Policy{Retries: 3}, b)
	m.cl.Budgets = resilience.NewBudgets(0.2, 0, 10*time.Second)
	const n = 100
	for range n {
		m.get("/x")
	}
	if hits := b.hits.Load(); hits > n*12/10+1 {
		t.Fatalf("%d requests reached the backend for %d calls: more than 1.2×", hits, n)
	} else if hits <= n {
		t.Fatalf("no retries at all (%d)", hits)
	}
}

func TestServerRateLimits(t *testing.T) {
	app := newBackend(t, "app", nil)
	s := &Server{Node: "n2", Limits: ratelimit.NewSet(0)}
	local := &Local{Namespace: "default", Service: "web", Limit: func() (float64, int) { return 5, 1 }, App: &http.Transport{}}
	ok, limited := 0, 0
	for range 20 {
		req, _ := http.NewRequest("GET", "http://web.svc/x", nil)
		resp, err := s.RoundTrip(req, local, Caller{Workload: "default/client"}, app.ep.Port())
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		}
	}
	if ok == 0 || ok > 6 || limited < 14 {
		t.Fatalf("20 immediate requests at 5 rps: %d admitted, %d limited", ok, limited)
	}
}

func TestLooksLikeHTTP(t *testing.T) {
	for in, want := range map[string]bool{"GET / HTTP/1.1\r\n": true, "POST /x": true, "PRI * HTTP/2.0\r\n": true, "GE": false, "EHLO x\r\n": false, "\x16\x03\x01": false, "HELO": false} {
		if LooksLikeHTTP([]byte(in)) != want {
			t.Errorf("LooksLikeHTTP(%q) = %v", in, !want)
		}
	}
}
