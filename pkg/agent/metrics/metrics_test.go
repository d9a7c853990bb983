package metrics

import (
	"io"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/hms-node/hms-node/pkg/api"
)

// istioRequestLabels is Istio's label set of istio_requests_total, written
// out again here (not taken from the code) so that a renamed or missing
// label fails the test.
var istioRequestLabels = []string{
	"connection_security_policy", "destination_app", "destination_canonical_revision",
	"destination_canonical_service", "destination_cluster", "destination_principal",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_version", "destination_workload", "destination_workload_namespace",
	"grpc_response_status", "reporter", "request_protocol", "response_code", "response_flags",
	"source_app", "source_canonical_revision", "source_canonical_service", "source_cluster",
	"source_principal", "source_version", "source_workload", "source_workload_namespace",
}

func family(t *testing.T, m *Metrics, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func names(l map[string]string) []string {
	var out []string
	for k := range l {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sourceCall(status uint32) *api.Call {
	return &api.Call{
		Reporter: "source", SourceWorkload: "shop/client", SourcePrincipal: "spiffe://cluster.local/ns/shop/sa/client",
		DestinationService: "shop/notify", DestinationPrincipal: "spiffe://cluster.local/ns/shop/sa/notify",
		Endpoint: "10.1.0.2:7000", Status: status, Flags: "-", Protocol: "HTTP/1.1",
		ConnectionSecurityPolicy: "mutual_tls", LatencyUs: 2500, RequestBytes: 10, ResponseBytes: 2000,
	}
}

func TestRequestsTotalNameLabelsAndValues(t *testing.T) {
	m := New("n1")
	for range 3 {
		m.ObserveCall(sourceCall(200))
	}
	m.ObserveCall(sourceCall(503))
	f := family(t, m, "istio_requests_total")
	if f.GetType() != dto.MetricType_COUNTER || len(f.GetMetric()) != 2 {
		t.Fatalf("istio_requests_total: type %v, %d series; want a counter with 2", f.GetType(), len(f.GetMetric()))
	}
	for _, s := range f.GetMetric() {
		l := labels(s)
		if got := names(l); !slices.Equal(got, istioRequestLabels) {
			t.Fatalf("labels %v\nwant %v", got, istioRequestLabels)
		}
		want := map[string]string{
			"reporter": "source", "source_workload": "client", "source_workload_namespace": "shop",
			"source_principal": "spiffe://cluster.local/ns/shop/sa/client", "source_canonical_service": "client",
			"source_canonical_revision": "latest", "source_app": "unknown", "source_cluster": "unknown",
			"destination_workload": "notify", "destination_workload_namespace": "shop",
			"destination_principal": "spiffe://cluster.local/ns/shop/sa/notify",
			"destination_service":   "notify.shop.svc", "destination_service_name": "notify",
			"destination_service_namespace": "shop", "destination_canonical_service": "notify",
			"request_protocol": "http", "response_flags": "-", "connection_security_policy": "mutual_tls",
			"grpc_response_status": "",
		}
		for k, v := range want {
			if l[k] != v {
				t.Errorf("%s = %q, want %q", k, l[k], v)
			}
		}
		wantCount := map[string]float64{"200": 3, "503": 1}[l["response_code"]]
		if got := s.GetCounter().GetValue(); got != wantCount {
			t.Errorf("response_code %s: %v requests, want %v", l["response_code"], got, wantCount)
		}
	}
}

func TestRequestHistogramsUseIstioBucketsAndUnits(t *testing.T) {
	m := New("n1")
	m.ObserveCall(sourceCall(200))
	d := family(t, m, "istio_request_duration_milliseconds").GetMetric()[0].GetHistogram()
	var bounds []float64
	for _, b := range d.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	istio := []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	if !slices.Equal(bounds, istio) {
		t.Fatalf("duration buckets %v, want Istio's %v", bounds, istio)
	}
	if d.GetSampleSum() != 2.5 {
		t.Fatalf("duration sum %v ms, want 2.5 (2500 µs)", d.GetSampleSum())
	}
	for name, sum := range map[string]float64{"istio_request_bytes": 10, "istio_response_bytes": 2000} {
		h := family(t, m, name).GetMetric()[0].GetHistogram()
		if h.GetSampleSum() != sum || h.GetBucket()[0].GetUpperBound() != 1 || len(h.GetBucket()) != 9 {
			t.Errorf("%s: sum %v, buckets %v", name, h.GetSampleSum(), h.GetBucket())
		}
	}
}

func TestUnknownWhenNotKnown(t *testing.T) {
	m := New("n1")
	// A call no endpoint answered (no healthy instance), from a caller
	// without identity.
	m.ObserveCall(&api.Call{Reporter: "source", DestinationService: "shop/notify", Status: 503, Flags: "UH", Protocol: "HTTP/2"})
	l := labels(family(t, m, "istio_requests_total").GetMetric()[0])
	for _, k := range []string{"source_workload", "source_principal", "destination_workload", "destination_principal", "connection_security_policy"} {
		if l[k] != "unknown" {
			t.Errorf("%s = %q, want unknown", k, l[k])
		}
	}
	if l["response_flags"] != "UH" || l["request_protocol"] != "http" || l["destination_service"] != "notify.shop.svc" {
		t.Errorf("labels %v", l)
	}
}

func TestMeshEventsAndCircuits(t *testing.T) {
	m := New("n1")
	m.Retry("shop/notify")
	m.Retry("shop/notify")
	m.RetryBudgetExhausted("shop/notify")
	m.RateLimited("shop/db")
	m.RateLimitQueued("shop/db", 20*time.Millisecond)
	m.Deny("wrong authority")
	m.SetCircuit("shop/notify", "open")
	m.SetCircuit("shop/db", "half-open")
	m.SetCircuit("shop/db", "closed")
	for name, v := range map[string]float64{"hms_retries_total": 2, "hms_retry_budget_exhausted_total": 1, "hms_rate_limited_total": 1} {
		s := family(t, m, name).GetMetric()[0]
		if got := s.GetCounter().GetValue(); got != v || len(s.GetLabel()) != 1 || s.GetLabel()[0].GetName() != "destination_service" {
			t.Errorf("%s = %v %v, want %v{destination_service}", name, got, s.GetLabel(), v)
		}
	}
	if d := family(t, m, "hms_denied_total").GetMetric()[0]; labels(d)["reason"] != "wrong_authority" || d.GetCounter().GetValue() != 1 {
		t.Errorf("hms_denied_total = %v", d)
	}
	if h := family(t, m, "hms_rate_limit_queue_seconds").GetMetric()[0].GetHistogram(); h.GetSampleSum() != 0.02 {
		t.Errorf("queue wait sum %v s, want 0.02", h.GetSampleSum())
	}
	if got := m.Circuits(); len(got) != 1 || got["shop/notify"] != "open" {
		t.Fatalf("Circuits() = %v, want only shop/notify open", got)
	}
	for _, s := range family(t, m, "hms_circuit_state").GetMetric() {
		l := labels(s)
		want := 0.0
		if l["destination_service"] == "notify.shop.svc" && l["state"] == "open" || l["destination_service"] == "db.shop.svc" && l["state"] == "closed" {
			want = 1
		}
		if s.GetGauge().GetValue() != want {
			t.Errorf("hms_circuit_state%v = %v, want %v", l, s.GetGauge().GetValue(), want)
		}
	}
}

func TestTopDestinations(t *testing.T) {
	var r rates
	r.init()
	t0 := time.Unix(1_000_000, 0)
	for i := range 30 {
		r.record("shop/a", i%3 == 0, t0.Add(time.Duration(i)*time.Second))
	}
	r.record("shop/b", true, t0)
	r.record("shop/old", false, t0.Add(-2*time.Minute))
	top := r.top(0, t0.Add(30*time.Second))
	if len(top) != 2 || top[0].Service != "shop/a" || top[0].Requests != 30 || top[0].Errors != 10 || top[1].Service != "shop/b" {
		t.Fatalf("top = %+v", top)
	}
	if top[0].RequestRate != 0.5 {
		t.Fatalf("request rate %v/s, want 30 per minute = 0.5", top[0].RequestRate)
	}
	// 61 s later shop/b's one call is out of the window; 45 s of shop/a remain.
	top = r.top(1, t0.Add(61*time.Second))
	if len(top) != 1 || top[0].Service != "shop/a" || top[0].Requests != 28 {
		t.Fatalf("top after a minute = %+v", top)
	}
	if _, ok := r.m["shop/b"]; ok {
		t.Fatal("an idle destination was kept")
	}
}

func TestObserveCallFeedsTopDestinationsFromSourceOnly(t *testing.T) {
	m := New("n1")
	m.ObserveCall(sourceCall(200))
	m.ObserveCall(sourceCall(502))
	dst := sourceCall(200)
	dst.Reporter = "destination"
	m.ObserveCall(dst)
	top := m.TopDestinations(5)
	if len(top) != 1 || top[0].Requests != 2 || top[0].Errors != 1 {
		t.Fatalf("top = %+v", top)
	}
}

func TestNilMetricsDoNothing(t *testing.T) {
	var m *Metrics
	m.ObserveCall(sourceCall(200))
	m.OpenTCP(TCPLabels{}, nil, nil).Close()
	m.Retry("a/b")
	m.RetryBudgetExhausted("a/b")
	m.RateLimited("a/b")
	m.RateLimitQueued("a/b", time.Millisecond)
	m.SetCircuit("a/b", "open")
	m.Deny("policy")
	if m.Circuits() == nil || m.TopDestinations(3) != nil || m.Watch(State{}) != nil || m.Register(nil) != nil {
		t.Fatal("nil Metrics")
	}
}

// promlint is what `promtool check metrics` runs: its only complaint must
// be Istio's millisecond unit, kept for dashboards.
func TestLintOnlyIstioDuration(t *testing.T) {
	m := New("n1")
	m.ObserveCall(sourceCall(200))
	var sent, received atomic.Int64
	sent.Store(1)
	m.OpenTCP(TCPLabels{Reporter: "source"}, &sent, &received).Close()
	m.Retry("a/b")
	m.RetryBudgetExhausted("a/b")
	m.RateLimited("a/b")
	m.RateLimitQueued("a/b", time.Millisecond)
	m.SetCircuit("a/b", "open")
	m.Deny("policy")
	m.Watch(testState())
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(fams).Lint()
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || problems[0].Metric != "istio_request_duration_milliseconds" {
		t.Fatalf("lint problems %+v; want only istio_request_duration_milliseconds's unit", problems)
	}
}

func TestHandlerServesTextFormat(t *testing.T) {
	m := New("n1")
	m.ObserveCall(sourceCall(200))
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `istio_requests_total{connection_security_policy="mutual_tls"`) ||
		!strings.Contains(string(b), "# TYPE istio_request_duration_milliseconds histogram") {
		t.Fatalf("handler output:\n%s", b)
	}
}

func testState() State {
	return State{
		Version:  "v1",
		Datapath: func() (map[string]uint64, error) { return map[string]uint64{"redirected": 7, "passed": 2}, nil },
		Registry: func() (RegistryState, bool) {
			return RegistryState{Connected: true, LastSync: time.Now().Add(-2 * time.Second), Revision: 42, Services: 3,
				Lag: Histogram{Bounds: []float64{0.01, 0.1}, Counts: []uint64{4, 1, 2}, Sum: 0.5}}, true
		},
		Certificates: func() []Certificate {
			return []Certificate{{Identity: "spiffe://cluster.local/ns/shop/sa/notify", NotAfter: time.Now().Add(time.Hour)}}
		},
		Workloads: func() map[string]WorkloadState {
			return map[string]WorkloadState{"shop/notify": {Serving: 2, Degraded: 1, Connections: 5}}
		},
		Tunnels: func() (uint64, uint64) { return 11, 3 },
	}
}

func TestStateReadAtScrape(t *testing.T) {
	m := New("n1")
	if err := m.Watch(testState()); err != nil {
		t.Fatal(err)
	}
	value := func(name string, want map[string]string) float64 {
		t.Helper()
		for _, s := range family(t, m, name).GetMetric() {
			l := labels(s)
			match := true
			for k, v := range want {
				match = match && l[k] == v
			}
			if match {
				switch {
				case s.Counter != nil:
					return s.GetCounter().GetValue()
				case s.Gauge != nil:
					return s.GetGauge().GetValue()
				}
			}
		}
		t.Fatalf("no %s%v", name, want)
		return 0
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"hms_datapath_events_total", map[string]string{"event": "redirected"}, 7},
		{"hms_datapath_events_total", map[string]string{"event": "passed"}, 2},
		{"hms_registry_connected", nil, 1},
		{"hms_registry_revision", nil, 42},
		{"hms_registry_services", nil, 3},
		{"hms_workloads", map[string]string{"workload": "shop/notify", "state": "degraded"}, 1},
		{"hms_proxy_connections_open", map[string]string{"workload": "shop/notify"}, 5},
		{"hms_hbone_tunnels_accepted_total", nil, 11},
		{"hms_plaintext_refused_total", nil, 3},
		{"hms_agent_info", map[string]string{"node": "n1", "version": "v1"}, 1},
	}
	for _, c := range checks {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if age := value("hms_registry_last_sync_age_seconds", nil); age < 2 || age > 10 {
		t.Errorf("sync age %v s, want about 2", age)
	}
	if exp := value("hms_certificate_seconds_to_expiry", map[string]string{"identity": "spiffe://cluster.local/ns/shop/sa/notify"}); exp < 3500 || exp > 3601 {
		t.Errorf("seconds to expiry %v, want about 3600", exp)
	}
	h := family(t, m, "hms_registry_propagation_lag_seconds").GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 7 || h.GetSampleSum() != 0.5 || h.GetBucket()[0].GetCumulativeCount() != 4 || h.GetBucket()[1].GetCumulativeCount() != 5 {
		t.Errorf("lag histogram %v", h)
	}
}

// The per-request cost on the proxy's path, series already made.
func BenchmarkObserveCall(b *testing.B) {
	m := New("n1")
	c := sourceCall(200)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveCall(c)
		}
	})
}

// gRPC calls are request_protocol "grpc" with their grpc-status in
// grpc_response_status; a status outside the spec's 0–16 is "unknown", so
// a server cannot grow the label set.
func TestGRPCCallsLabelled(t *testing.T) {
	m := New("n1")
	for _, st := range []string{"0", "0", "5", "999", "x"} {
		c := sourceCall(200)
		c.Protocol, c.GrpcStatus = "gRPC", st
		m.ObserveCall(c)
	}
	got := map[string]float64{}
	for _, s := range family(t, m, "istio_requests_total").GetMetric() {
		l := labels(s)
		if l["request_protocol"] != "grpc" {
			t.Errorf("request_protocol %q, want grpc", l["request_protocol"])
		}
		got[l["grpc_response_status"]] += s.GetCounter().GetValue()
	}
	want := map[string]float64{"0": 2, "5": 1, "unknown": 2}
	if !maps.Equal(got, want) {
		t.Fatalf("requests by grpc_response_status %v, want %v", got, want)
	}
}
