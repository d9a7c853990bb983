package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// observedMesh is twoNodes with the agents' metrics endpoints and the
// control plane's HTTP listener on loopback ports.
type observedMesh struct {
	*twoNodes
	metrics1, metrics2, controlHTTP string
}

func loopbackAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }

func newObservedMesh(t *testing.T) *observedMesh {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	om := &observedMesh{metrics1: loopbackAddr(t), metrics2: loopbackAddr(t), controlHTTP: loopbackAddr(t)}
	m := &twoNodes{control: newControl(t, "--http-addr", om.controlHTTP), n1: bed.MustAddNode(t, "n1"), n2: bed.MustAddNode(t, "n2")}
	flags := []string{"--probe-interval", "500ms", "--dns-upstream", startFakeUpstream(t)}
	m.a1 = newAgent(t, m.n1, append(append(m.control.agentFlags(), flags...), "--metrics-addr", om.metrics1)...)
	m.a2 = newAgent(t, m.n2, append(append(m.control.agentFlags(), flags...), "--metrics-addr", om.metrics2)...)
	m.a1.start()
	m.a2.start()
	m.resolv = filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(m.resolv, []byte("nameserver 192.0.2.53\noptions attempts:1 timeout:2\n"), 0o644)
	om.twoNodes = m
	return om
}

const observedManifests = `name: notify-svc
port: 7000
protocol: http
---
name: echo
port: 7100
protocol: tcp
`

// callPattern is the known traffic: 20 GETs answered 200 and 5 answered
// 503 by the backend, from the client pod, by name, one curl each.
func (m *observedMesh) callPattern(t *testing.T, client *testbed.Pod) {
	t.Helper()
	script := `for i in $(seq 20); do curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 http://notify-svc.svc/ok; done
for i in $(seq 5); do curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 http://notify-svc.svc/status/503; done`
	out, err := m.inPod(t, client, "sh", "-c", script)
	if err != nil || strings.Count(out, "200\n") != 20 || strings.Count(out, "503\n") != 5 {
		t.Fatalf("call pattern: %v\n%s", err, out)
	}
}

// startObserved starts the mesh with notify-svc (http) on n2, echo (tcp)
// on n2, and the client and a warm-up pod on n1; it returns once the
// warm-up pod reached notify-svc by name.
func startObserved(t *testing.T) (*observedMesh, *testbed.Pod) {
	m := newObservedMesh(t)
	m.control.apply(observedManifests)
	client, warm := m.n1.MustAddPod(t, "client"), m.n1.MustAddPod(t, "warm")
	notify, echo := m.n2.MustAddPod(t, "notify"), m.n2.MustAddPod(t, "echo")
	startServer(t, notify, 7000, testApp, "http", "--addr", ":7000", "--body", "notify")
	startServer(t, echo, 7100, testApp, "echo", "--addr", ":7100")
	m.a1.enroll(client, "client")
	m.a1.enroll(warm, "warm")
	m.a2.enroll(notify, "notify-svc", 7000)
	m.a2.enroll(echo, "echo", 7100)
	waitFor(t, 10*time.Second, "both services healthy", func() bool {
		return m.control.healthyInstances("notify-svc") == 1 && m.control.healthyInstances("echo") == 1
	})
	// The warm-up's calls are labelled source_workload="warm": they do not
	// count in the client's pattern.
	waitFor(t, 10*time.Second, "a call by name from the warm-up pod", func() bool {
		_, err := m.curlByName(t, warm, "http://notify-svc.svc/warm")
		return err == nil
	})
	return m, client
}

func TestPrivilegedPrometheus(t *testing.T) {
	m, client := startObserved(t)
	// bulk (tcp) on n2 moves different amounts each way, so the TCP byte
	// counters show which direction is which.
	m.control.apply("name: bulk\nport: 7200\nprotocol: tcp\n")
	bulk := m.n2.MustAddPod(t, "bulk")
	startServer(t, bulk, 7200, testApp, "bulk-server", "--addr", ":7200")
	m.a2.enroll(bulk, "bulk", 7200)
	waitFor(t, 10*time.Second, "bulk healthy", func() bool { return m.control.healthyInstances("bulk") == 1 })
	// near (tcp) on n1, the client's node: served in-process, reported
	// under both reporters by agent 1.
	m.control.apply("name: near\nport: 7300\nprotocol: tcp\n")
	near := m.n1.MustAddPod(t, "near")
	startServer(t, near, 7300, testApp, "bulk-server", "--addr", ":7300")
	m.a1.enroll(near, "near", 7300)
	waitFor(t, 10*time.Second, "near healthy", func() bool { return m.control.healthyInstances("near") == 1 })
	prom := startPrometheus(t, map[string][]string{
		"hms-agent": {m.metrics1, m.metrics2}, "hms-control": {m.controlHTTP},
	})
	waitFor(t, 30*time.Second, "Prometheus to scrape all three targets", func() bool {
		return prom.sum(t, `sum(up)`) == 3
	})

	m.callPattern(t, client)
	m.tcpPattern(t, client)

	want := map[string]float64{"source/200": 20, "source/503": 5, "destination/200": 20, "destination/503": 5}
	q := `sum by (reporter, response_code) (istio_requests_total{source_workload="client",destination_service_name="notify-svc"})`
	var got map[string]float64
	waitFor(t, 20*time.Second, "istio_requests_total to show the call pattern", func() bool {
		got = prom.vector(t, q, "reporter", "response_code")
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
	t.Logf("%s = %v", q, got)
	checkRequestLabels(t, prom, m)
	if n := prom.sum(t, `sum(istio_request_duration_milliseconds_count{source_workload="client"})`); n != 50 {
		t.Errorf("istio_request_duration_milliseconds_count = %v, want 50 (25 calls × 2 reporters)", n)
	}
	t.Run("tcp", func(t *testing.T) { checkTCPMetrics(t, prom, m) })
	checkHMSMetrics(t, prom, m)
	t.Run("grafana", func(t *testing.T) { checkDashboard(t, prom, true) })
	for _, ep := range []string{m.metrics1, m.metrics2, m.controlHTTP} {
		promtoolCheck(t, ep)
	}
}

// checkRequestLabels: each side of the 503s is reported by its own agent,
// with Istio's labels.
func checkRequestLabels(t *testing.T, prom *promProc, m *observedMesh) {
	series := prom.query(t, `istio_requests_total{source_workload="client",response_code="503"}`)
	if len(series) != 2 {
		t.Fatalf("%d series of the client's 503s, want one per reporter: %v", len(series), series)
	}
	for _, s := range series {
		l := s.Metric
		wantInstance := map[string]string{"source": m.metrics1, "destination": m.metrics2}[l["reporter"]]
		checks := map[string]string{
			"instance": wantInstance, "source_workload_namespace": "default",
			"source_principal":      "spiffe://cluster.local/ns/default/sa/client",
			"destination_principal": "spiffe://cluster.local/ns/default/sa/notify-svc",
			"destination_service":   "notify-svc.default.svc", "destination_service_namespace": "default",
			"destination_workload": "notify-svc", "request_protocol": "http", "response_flags": "-",
			"connection_security_policy": "mutual_tls", "source_canonical_service": "client",
		}
		for k, v := range checks {
			if l[k] != v {
				t.Errorf("reporter=%s: %s=%q, want %q (series %v)", l["reporter"], k, l[k], v, l)
			}
		}
	}
}

// tcpPattern is the known TCP traffic from the client, cross-node, one
// connection each: 3 to echo, each 2 round trips of 64 bytes (128 bytes
// each way); 2 to bulk downloading 100000 bytes (a 9-byte header up); 1
// to bulk uploading 50000 bytes (header and data up, a 71-byte
// "<sha256> 50000\n" down); and on the same node 1 to near, downloading
// 1000 bytes.
func (m *observedMesh) tcpPattern(t *testing.T, client *testbed.Pod) {
	t.Helper()
	echo, bulk := m.serviceVIP(t, "echo")+":7100", m.serviceVIP(t, "bulk")+":7200"
	out, err := run(t, client, testApp, "bulk", "--addr", m.serviceVIP(t, "near")+":7300", "--dir", "down", "--bytes", "1000")
	if err != nil || !strings.Contains(out, `"bytes":1000,`) {
		t.Fatalf("bulk down 1000 from near: %v\n%s", err, out)
	}
	for i := range 3 {
		if out, err := run(t, client, testApp, "rr", "--addr", echo, "--n", "2", "--size", "64"); err != nil {
			t.Fatalf("tcp connection %d to echo: %v\n%s", i, err, out)
		}
	}
	for _, dir := range []string{"down", "down", "up"} {
		n := map[string]string{"down": "100000", "up": "50000"}[dir]
		out, err := run(t, client, testApp, "bulk", "--addr", bulk, "--dir", dir, "--bytes", n)
		if err != nil || !strings.Contains(out, `"bytes":`+n+",") {
			t.Fatalf("bulk %s %s: %v\n%s", dir, n, err, out)
		}
	}
}

// tcpWant is what tcpPattern must show, per reporter and destination
// service: sent is to the client, received from it (Istio's meaning).
var tcpWant = map[string]map[string]float64{
	"istio_tcp_connections_opened_total": {"echo": 3, "bulk": 3, "near": 1},
	"istio_tcp_connections_closed_total": {"echo": 3, "bulk": 3, "near": 1},
	"istio_tcp_sent_bytes_total":         {"echo": 3 * 128, "bulk": 2*100000 + 71, "near": 1000},
	"istio_tcp_received_bytes_total":     {"echo": 3 * 128, "bulk": 2*9 + 9 + 50000, "near": 9},
}

// checkTCPMetrics: tcpPattern's connections, counted exactly by both
// agents, and nothing else in the TCP metrics (HTTP calls, the HTTP
// tunnels and health probes are not TCP connections of the mesh).
func checkTCPMetrics(t *testing.T, prom *promProc, m *observedMesh) {
	want := map[string]float64{}
	for name, bySvc := range tcpWant {
		for svc, v := range bySvc {
			for _, r := range []string{"source", "destination"} {
				want[name+"/"+r+"/client/"+svc] = v
			}
		}
	}
	q := `sum by (__name__, reporter, source_workload, destination_service_name) ({__name__=~"istio_tcp_.*"})`
	var got map[string]float64
	waitFor(t, 20*time.Second, "the TCP call pattern in Prometheus", func() bool {
		got = prom.vector(t, q, "__name__", "reporter", "source_workload", "destination_service_name")
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
	t.Logf("%s = %v", q, got)
	for _, svc := range []string{"echo", "bulk", "near"} {
		dstAgent := map[bool]string{true: m.metrics1, false: m.metrics2}[svc == "near"]
		for name := range tcpWant {
			checkTCPLabels(t, prom, name, svc, map[string]string{"source": m.metrics1, "destination": dstAgent})
		}
	}
}

// checkTCPLabels: one series per reporter, each from the agent given by
// instance, with Istio's labels, one by one.
func checkTCPLabels(t *testing.T, prom *promProc, name, svc string, instance map[string]string) {
	series := prom.query(t, name+`{source_workload="client",destination_service_name="`+svc+`"}`)
	if len(series) != 2 {
		t.Fatalf("%d series of %s to %s, want one per reporter: %v", len(series), name, svc, series)
	}
	for _, s := range series {
		l := s.Metric
		checks := map[string]string{
			"instance": instance[l["reporter"]], "job": "hms-agent",
			"source_workload": "client", "source_workload_namespace": "default",
			"source_principal": "spiffe://cluster.local/ns/default/sa/client", "source_app": "unknown",
			"source_version": "unknown", "source_canonical_service": "client", "source_canonical_revision": "latest",
			"source_cluster": "unknown", "destination_workload": svc, "destination_workload_namespace": "default",
			"destination_principal": "spiffe://cluster.local/ns/default/sa/" + svc, "destination_app": "unknown",
			"destination_version": "unknown", "destination_service": svc + ".default.svc",
			"destination_service_name": svc, "destination_service_namespace": "default",
			"destination_canonical_service": svc, "destination_canonical_revision": "latest",
			"destination_cluster": "unknown", "request_protocol": "tcp", "response_flags": "-",
			"connection_security_policy": "mutual_tls",
		}
		for k, v := range checks {
			if l[k] != v {
				t.Errorf("%s reporter=%s: %s=%q, want %q (series %v)", name, l["reporter"], k, l[k], v, l)
			}
		}
		if len(l) != len(checks)+2 { // + __name__ and reporter
			t.Errorf("%s reporter=%s has %d labels, want %d: %v", name, l["reporter"], len(l), len(checks)+2, l)
		}
	}
}

// checkHMSMetrics checks the hms_* series of both agents and the
// control plane, as Prometheus stored them.
func checkHMSMetrics(t *testing.T, prom *promProc, m *observedMesh) {
	a1, a2, c := fmt.Sprintf("instance=%q", m.metrics1), fmt.Sprintf("instance=%q", m.metrics2), fmt.Sprintf("instance=%q", m.controlHTTP)
	atLeast := map[string]float64{
		`hms_datapath_events_total{event="redirected",` + a1 + `}`:                                  25,
		`hms_registry_connected{` + a1 + `}`:                                                        1,
		`hms_registry_connected{` + a2 + `}`:                                                        1,
		`hms_registry_propagation_lag_seconds_count{` + a1 + `}`:                                    1,
		`hms_certificate_seconds_to_expiry{identity="spiffe://cluster.local/ns/default/sa/client"}`: 3600,
		`hms_workloads{workload="default/notify-svc",state="serving",` + a2 + `}`:                   1,
		`hms_hbone_tunnels_accepted_total{` + a2 + `}`:                                              1,
		`grpc_server_handled_total{grpc_method="Apply",grpc_code="OK",` + c + `}`:                   1,
		`hms_control_streams_open{grpc_method="Connect"}`:                                           2,
		`hms_control_registry_objects{kind="services"}`:                                             4,
		`hms_control_etcd_request_duration_seconds_count{op="txn",result="ok"}`:                     1,
	}
	exactly := map[string]float64{
		`hms_control_streams_open{grpc_method="Connect"}`: 2,
		`hms_control_registry_objects{kind="services"}`:   4, // notify-svc, echo, bulk, near
		`hms_registry_services{` + a1 + `}`:               4,
	}
	keys := make([]string, 0, len(atLeast))
	for q := range atLeast {
		keys = append(keys, q)
	}
	sort.Strings(keys)
	for _, q := range keys {
		v := prom.sum(t, "sum("+q+")")
		if v < atLeast[q] || exactly[q] != 0 && v != exactly[q] {
			t.Errorf("%s = %v, want ≥ %v (exactly %v when set)", q, v, atLeast[q], exactly[q])
		}
	}
}

// promtoolCheck lints an endpoint with `promtool check metrics`: the one
// complaint allowed is Istio's millisecond unit, kept for dashboards.
func promtoolCheck(t *testing.T, ep string) {
	t.Helper()
	raw := scrape(t, ep)
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(raw)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasPrefix(line, "istio_request_duration_milliseconds ") {
			t.Errorf("promtool check metrics on %s: %s", ep, line)
		}
	}
	t.Logf("promtool check metrics on %s (%d bytes): err=%v %s", ep, len(raw), err, bytes.TrimSpace(out))
}

func scrape(t *testing.T, ep string) string {
	t.Helper()
	resp, err := http.Get("http://" + ep + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %v %s", ep, err, resp.Status)
	}
	return string(b)
}

// serviceVIP is a service's VIP from `list -o json`.
func (m *observedMesh) serviceVIP(t *testing.T, name string) string {
	l, _ := m.control.list()
	for _, s := range l.Services {
		if s.Name == name {
			return s.VIP
		}
	}
	t.Fatalf("no service %s in list", name)
	return ""
}

// promProc is Debian's prometheus, scraping loopback targets every second.
type promProc struct {
	addr string
	cmd  *exec.Cmd
}

func startPrometheus(t *testing.T, jobs map[string][]string) *promProc {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed (apt-get install prometheus): %v", err)
	}
	dir := t.TempDir()
	cfg := "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\nscrape_configs:\n"
	for job, targets := range jobs {
		q := make([]string, len(targets))
		for i, tg := range targets {
			q[i] = strconv.Quote(tg)
		}
		cfg += fmt.Sprintf("- job_name: %s\n  static_configs: [{targets: [%s]}]\n", job, strings.Join(q, ", "))
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &promProc{addr: loopbackAddr(t)}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"), "--web.listen-address", p.addr)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	waitFor(t, 30*time.Second, "Prometheus to be ready", func() bool {
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	})
	t.Logf("prometheus on %s with:\n%s", p.addr, cfg)
	return p
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) float() float64 {
	str, _ := s.Value[1].(string)
	v, _ := strconv.ParseFloat(str, 64)
	return v
}

// query runs an instant query through Prometheus's HTTP API.
func (p *promProc) query(t *testing.T, q string) []promSample {
	t.Helper()
	var r struct {
		Data struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	p.getJSON(t, "/api/v1/query?query="+url.QueryEscape(q), &r)
	return r.Data.Result
}

// getJSON calls the HTTP API and decodes a successful answer into v.
func (p *promProc) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Status != "success" {
		t.Fatalf("prometheus %s: %v %s %s", path, err, st.Status, st.Error)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("prometheus %s: %v", path, err)
	}
}

// sum is the value of a query that yields one sample (0 when none).
func (p *promProc) sum(t *testing.T, q string) float64 {
	t.Helper()
	res := p.query(t, q)
	if len(res) == 0 {
		return 0
	}
	return res[0].float()
}

// vector maps each sample's values of the labels (joined by "/") to its
// value.
func (p *promProc) vector(t *testing.T, q string, labels ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, s := range p.query(t, q) {
		k := make([]string, len(labels))
		for i, l := range labels {
			k[i] = s.Metric[l]
		}
		out[strings.Join(k, "/")] = s.float()
	}
	return out
}
