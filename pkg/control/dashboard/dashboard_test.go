package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// fakeSource is a mesh of three services; tests change its stats.
type fakeSource struct {
	mu       sync.Mutex
	reg      *Registry
	regErr   error
	edges    []*api.EdgeStats
	circuits map[string][]*api.CircuitStatus
	certs    map[string][]*api.CertStatus
	calls    []*api.Call
	reads    int // Registry calls
	tapped   chan *api.TapRequest
	tapEnded chan error
}

func newFake() *fakeSource {
	return &fakeSource{
		reg: &Registry{Revision: 7,
			Services: []*api.Service{
				{Namespace: "default", Name: "notify-svc", Vip: "240.240.0.2", Ports: []uint32{7000}, Protocol: "http", Mesh: &api.MeshPolicy{RateLimitRps: 50}},
				{Namespace: "default", Name: "client", Vip: "240.240.0.1", Ports: []uint32{8080}},
				{Namespace: "billing", Name: "ledger", Vip: "240.240.0.3", Ports: []uint32{9000}, Protocol: "tcp", Mesh: &api.MeshPolicy{RateLimitRps: 10}},
			},
			Instances: []*api.Instance{
				{Namespace: "default", Service: "notify-svc", Node: "n2", Ip: "10.250.2.3", Port: 7000, Healthy: true},
				{Namespace: "default", Service: "notify-svc", Node: "n1", Ip: "10.250.1.4", Port: 7000, Healthy: false},
				{Namespace: "default", Service: "gone", Node: "n1", Ip: "10.250.1.9", Port: 1},
			},
			Nodes:  []*api.Node{{Name: "n1", Address: "10.250.1.1"}, {Name: "n2", Address: "10.250.2.1"}},
			Limits: []*api.RateLimit{{Namespace: "billing", Service: "ledger", Rps: 5}},
		},
		edges: []*api.EdgeStats{{Source: "default/client", Destination: "default/notify-svc", Requests: 50, Errors: 0, P99Ms: 12.5}},
		circuits: map[string][]*api.CircuitStatus{"n1": {{Destination: "default/notify-svc", State: "closed"},
			{Destination: "billing/ledger", State: "open"}}},
		certs: map[string][]*api.CertStatus{"n1": {{Identity: "spiffe://mesh/ns/default/sa/client", ExpiryUnix: testNow.Add(12 * time.Hour).Unix()},
			{Identity: "spiffe://mesh/node/n1", ExpiryUnix: testNow.Add(30 * time.Minute).Unix()}}},
		tapped:   make(chan *api.TapRequest, 1),
		tapEnded: make(chan error, 1),
	}
}

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func (f *fakeSource) Registry(context.Context) (*Registry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.reg, f.regErr
}

func (f *fakeSource) MeshStats() ([]*api.EdgeStats, map[string][]*api.CircuitStatus, map[string][]*api.CertStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.edges, f.circuits, f.certs
}

// TapCalls sends the fake's calls, then follows until ctx ends.
func (f *fakeSource) TapCalls(ctx context.Context, req *api.TapRequest, each func(*api.Call) error) error {
	f.tapped <- req
	for _, c := range f.calls {
		if err := each(c); err != nil {
			return err
		}
	}
	<-ctx.Done()
	f.tapEnded <- ctx.Err()
	return ctx.Err()
}

func (f *fakeSource) setEdges(e ...*api.EdgeStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.edges = e
}

// serve mounts the dashboard under /dashboard/ as the control plane does.
func serve(t *testing.T, src Source, done <-chan struct{}) *httptest.Server {
	t.Helper()
	h, err := New(Config{Source: src, Interval: 20 * time.Millisecond, Done: done, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func getOverview(t *testing.T, url string) *Overview {
	t.Helper()
	resp, err := http.Get(url + "/dashboard/api/overview")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("overview: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	o := &Overview{}
	if err := json.NewDecoder(resp.Body).Decode(o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestOverview(t *testing.T) {
	o := getOverview(t, serve(t, newFake(), nil).URL)
	if len(o.Services) != 3 || o.Services[0].ID != "billing/ledger" || o.Services[2].ID != "default/notify-svc" || o.Revision != 7 {
		t.Fatalf("services %+v", o.Services)
	}
	notify := o.Services[2]
	if notify.VIP != "240.240.0.2" || notify.Healthy != 1 || len(notify.Instances) != 2 || notify.Instances[0].Node != "n1" || notify.Instances[0].Healthy {
		t.Errorf("notify-svc %+v", notify)
	}
	if o.Services[1].Protocol != "auto" || len(o.Services[1].Instances) != 0 {
		t.Errorf("client %+v", o.Services[1])
	}
	// `limit set` (5) wins over the manifest (10); the manifest's applies otherwise.
	wantLimits := []RateLimit{{"billing/ledger", 5, "limit"}, {"default/notify-svc", 50, "manifest"}}
	if !equalJSON(o.RateLimits, wantLimits) {
		t.Errorf("rate limits %+v, want %+v", o.RateLimits, wantLimits)
	}
	wantEdge := Edge{Source: "default/client", Destination: "default/notify-svc", Requests: 50, RPS: 10, P99Ms: 12.5, State: EdgeOK}
	if len(o.Edges) != 1 || !equalJSON(o.Edges[0], wantEdge) {
		t.Errorf("edges %+v, want %+v", o.Edges, wantEdge)
	}
	if len(o.Circuits) != 1 || o.Circuits[0] != (Circuit{"n1", "billing/ledger", "open"}) {
		t.Errorf("circuits (closed ones left out) %+v", o.Circuits)
	}
	if len(o.Certs) != 2 || o.Certs[0].State != "expiring" || o.Certs[0].SecondsLeft != 1800 || o.Certs[1].State != "ok" {
		t.Errorf("certs (soonest first) %+v", o.Certs)
	}
	if len(o.Nodes) != 2 || !o.Nodes[0].Reporting || o.Nodes[1].Reporting {
		t.Errorf("nodes %+v", o.Nodes)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestEdgeStates(t *testing.T) {
	for errs, want := range map[uint64]string{0: EdgeOK, 1: EdgeOK, 5: EdgeDegraded, 40: EdgeDegraded, 50: EdgeFailing, 200: EdgeFailing} {
		o := build(testNow, 5*time.Second, nil, []*api.EdgeStats{{Source: "a/x", Destination: "a/y", Requests: 200, Errors: errs}}, nil, nil)
		if got := o.Edges[0].State; got != want {
			t.Errorf("%d of 200 errors: %s, want %s", errs, got, want)
		}
	}
	o := build(testNow, 5*time.Second, nil, []*api.EdgeStats{{Source: "a/x", Destination: "a/y", Requests: 3, Errors: 3}},
		map[string][]*api.CircuitStatus{"n1": {{Destination: "a/y", State: "half-open"}}, "n2": {{Destination: "a/y", State: "open"}}}, nil)
	if e := o.Edges[0]; e.Circuit != "open" || e.State != EdgeFailing || e.ErrorRate != 1 {
		t.Errorf("edge into an open circuit %+v", e)
	}
}

// With etcd down the page still gets the live stats, and says why the
// registry is missing.
func TestOverviewRegistryDown(t *testing.T) {
	f := newFake()
	f.reg, f.regErr = nil, errors.New("etcdserver: request timed out")
	o := getOverview(t, serve(t, f, nil).URL)
	if len(o.Services) != 0 || len(o.Edges) != 1 || len(o.Errors) != 1 || !strings.Contains(o.Errors[0], "request timed out") {
		t.Errorf("overview with the registry down: %+v", o)
	}
}

// events reads one SSE stream: it returns the next event of a name.
type events struct {
	r    *bufio.Reader
	body io.Closer
}

func openEvents(t *testing.T, url string) *events {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("%s: %s %s", url, resp.Status, ct)
	}
	return &events{r: bufio.NewReader(resp.Body), body: resp.Body}
}

func (e *events) next(t *testing.T, name string, v any) {
	t.Helper()
	event := ""
	for {
		line, err := e.r.ReadString('\n')
		if err != nil {
			t.Fatalf("waiting for event %q: %v", name, err)
		}
		line = strings.TrimSuffix(line, "\n")
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			event = ev
		} else if data, ok := strings.CutPrefix(line, "data: "); ok && event == name {
			if err := json.Unmarshal([]byte(data), v); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// The live stream sends the overview again as the stats change: the page
// needs no reload.
func TestEventsFollowChanges(t *testing.T) {
	f := newFake()
	srv := serve(t, f, nil)
	ev := openEvents(t, srv.URL+"/dashboard/api/events")
	var o Overview
	ev.next(t, "overview", &o)
	if o.Edges[0].State != EdgeOK {
		t.Fatalf("first event: %+v", o.Edges)
	}
	f.setEdges(&api.EdgeStats{Source: "default/client", Destination: "default/notify-svc", Requests: 50, Errors: 50})
	deadline := time.Now().Add(5 * time.Second)
	for o.Edges[0].State != EdgeFailing {
		if time.Now().After(deadline) {
			t.Fatalf("no failing edge on the stream: %+v", o.Edges)
		}
		ev.next(t, "overview", &o)
	}
}

// A shutting-down server ends the live streams.
func TestEventsEndOnDone(t *testing.T) {
	done := make(chan struct{})
	ev := openEvents(t, serve(t, newFake(), done).URL+"/dashboard/api/events")
	var o Overview
	ev.next(t, "overview", &o)
	close(done)
	if _, err := io.ReadAll(ev.r); err != nil {
		t.Fatalf("stream after done: %v", err)
	}
}

func TestTap(t *testing.T) {
	f := newFake()
	f.calls = []*api.Call{{TimeUnixNano: testNow.UnixNano(), Reporter: "source", Node: "n1", SourceWorkload: "default/client",
		DestinationService: "default/notify-svc", Method: "GET", Path: "/sms", Status: 503, LatencyUs: 2500, Flags: "-",
		ConnectionSecurityPolicy: "mutual_tls"}}
	srv := serve(t, f, nil)
	ev := openEvents(t, srv.URL+"/dashboard/api/tap?service=default/notify-svc&last=20")
	var st tapStatus
	ev.next(t, "status", &st)
	if st.State != "following" {
		t.Fatalf("status %+v", st)
	}
	var c Call
	ev.next(t, "call", &c)
	want := Call{Time: testNow, Reporter: "source", Node: "n1", Source: "default/client", Destination: "default/notify-svc",
		Method: "GET", Path: "/sms", Status: 503, LatencyMs: 2.5, Flags: "-", MTLS: true}
	if !equalJSON(c, want) {
		t.Errorf("call %+v, want %+v", c, want)
	}
	if req := <-f.tapped; req.Namespace != "default" || req.Service != "notify-svc" || req.Last != 20 || !req.Follow {
		t.Errorf("tap request %+v", req)
	}
	ev.body.Close() // the page goes: the tap at the agents ends
	select {
	case <-f.tapEnded:
	case <-time.After(5 * time.Second):
		t.Fatal("tap still running after the page went")
	}
}

func TestTapBadRequests(t *testing.T) {
	srv := serve(t, newFake(), nil)
	for _, q := range []string{"", "?service=", "?service=a/b/c", "?service=x&last=-1", "?service=x&last=100000"} {
		resp, err := http.Get(srv.URL + "/dashboard/api/tap" + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.HasPrefix(string(b), "tap: ") {
			t.Errorf("tap%s: %s %q", q, resp.Status, b)
		}
	}
}

// The page and its files are embedded and same-origin: no CDN, nothing
// inline that the policy would block.
func TestPageIsSelfContained(t *testing.T) {
	srv := serve(t, newFake(), nil)
	for path, ctype := range map[string]string{"/dashboard/": "text/html", "/dashboard/static/app.js": "text/javascript",
		"/dashboard/static/style.css": "text/css"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("%s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("%s: policy %q", path, csp)
		}
		if m := regexp.MustCompile(`(src|href)="(https?:)?//`).Find(b); m != nil {
			t.Errorf("%s loads from elsewhere: %s", path, m)
		}
		if path == "/dashboard/" && (strings.Contains(string(b), "<script>") || strings.Contains(string(b), "style=")) {
			t.Errorf("index.html has inline script or style, which the policy blocks")
		}
	}
	if resp, _ := http.Get(srv.URL + "/dashboard/nope"); resp.StatusCode != 404 {
		t.Errorf("unknown path: %s", resp.Status)
	}
}

// Pages opened together share registry reads: one per half interval.
func TestOverviewShared(t *testing.T) {
	f := newFake()
	h, err := New(Config{Source: f, Interval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		h.overview(context.Background())
	}
	time.Sleep(10 * time.Millisecond)
	if f.reads != 1 {
		t.Errorf("%d registry reads for 5 overviews within half an interval, want 1", f.reads)
	}
	h.cfg.Interval = 10 * time.Millisecond
	h.overview(context.Background())
	if f.reads != 2 {
		t.Errorf("%d registry reads after the interval, want 2", f.reads)
	}
}
