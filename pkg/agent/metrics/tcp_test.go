package metrics

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// tcpValues reads the four TCP counters of the only series there is.
func tcpValues(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, name := range []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
		"istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total"} {
		ms := family(t, m, name).GetMetric()
		if len(ms) != 1 {
			t.Fatalf("%s has %d series, want 1", name, len(ms))
		}
		out[name] = ms[0].GetCounter().GetValue()
	}
	return out
}

func TestTCPMetrics(t *testing.T) {
	m := New("n1")
	l := TCPLabels{Reporter: "destination", SourceWorkload: "shop/client", DestinationService: "shop/db", SecurityPolicy: "mutual_tls"}
	var sent1, recv1, sent2, recv2 atomic.Int64
	c1 := m.OpenTCP(l, &sent1, &recv1)
	c2 := m.OpenTCP(l, &sent2, &recv2)
	sent1.Add(100)
	recv1.Add(7)
	c1.Close()
	sent2.Add(5) // c2 is still open: its bytes wait for a flush
	want := slices.DeleteFunc(slices.Clone(istioRequestLabels), func(s string) bool {
		return s == "response_code" || s == "grpc_response_status"
	})
	for name, v := range map[string]float64{
		"istio_tcp_connections_opened_total": 2, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total": 100, "istio_tcp_received_bytes_total": 7,
	} {
		s := family(t, m, name).GetMetric()[0]
		lv := labels(s)
		if got := names(lv); !slices.Equal(got, want) {
			t.Errorf("%s labels %v\nwant %v", name, got, want)
		}
		if s.GetCounter().GetValue() != v || lv["request_protocol"] != "tcp" || lv["destination_service_name"] != "db" ||
			lv["reporter"] != "destination" || lv["response_flags"] != "-" || lv["connection_security_policy"] != "mutual_tls" ||
			lv["destination_workload"] != "db" || lv["source_workload"] != "client" || lv["source_principal"] != "unknown" {
			t.Errorf("%s = %v %v, want %v", name, s.GetCounter().GetValue(), lv, v)
		}
	}
	c2.Close()
	if got := tcpValues(t, m)["istio_tcp_sent_bytes_total"]; got != 105 {
		t.Errorf("sent after the second close = %v, want 105", got)
	}
	if n := len(m.tcp); n != 1 {
		t.Errorf("%d cached label sets, want 1", n)
	}
}

// TestTCPFlushWhileOpen: a long connection's bytes show before it closes,
// each byte once, and a second Close adds only what came after the first.
func TestTCPFlushWhileOpen(t *testing.T) {
	defer func(d time.Duration) { tcpFlushInterval = d }(tcpFlushInterval)
	tcpFlushInterval = 10 * time.Millisecond
	m := New("n1")
	var sent, received atomic.Int64
	c := m.OpenTCP(TCPLabels{Reporter: "source", DestinationService: "shop/db"}, &sent, &received)
	sent.Add(1000)
	received.Add(10)
	deadline := time.Now().Add(5 * time.Second)
	for tcpValues(t, m)["istio_tcp_sent_bytes_total"] != 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("no flush while open: %v", tcpValues(t, m))
		}
		time.Sleep(5 * time.Millisecond)
	}
	sent.Add(24)
	c.Close()
	received.Add(2) // a copy that ended after the first Close
	c.Close()
	time.Sleep(30 * time.Millisecond) // no tick after Close
	want := map[string]float64{
		"istio_tcp_connections_opened_total": 1, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_sent_bytes_total": 1024, "istio_tcp_received_bytes_total": 12,
	}
	if got := tcpValues(t, m); !equalMaps(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func equalMaps(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// BenchmarkOpenTCP is the per-connection cost: a cached label set, the
// opened counter, a timer, and the close.
func BenchmarkOpenTCP(b *testing.B) {
	m := New("n1")
	l := TCPLabels{Reporter: "source", SourceWorkload: "shop/client", DestinationService: "shop/db", SecurityPolicy: "mutual_tls"}
	var sent, received atomic.Int64
	b.ReportAllocs()
	for b.Loop() {
		sent.Add(100)
		m.OpenTCP(l, &sent, &received).Close()
	}
}
