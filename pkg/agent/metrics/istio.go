package metrics

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hms-node/hms-node/pkg/api"
)

// unknown is Istio's value for a label the reporter cannot fill.
const unknown = "unknown"

// requestLabels are the labels of Istio's request metrics, in Istio's
// order (istio/proxy testdata/metric/client_request_total.yaml.tmpl).
var requestLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_app", "destination_version", "destination_service", "destination_service_name",
	"destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
	"destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// tcpLabels are the TCP metrics' labels: the request labels without
// response_code and grpc_response_status; request_protocol is "tcp".
var tcpLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"source_app", "source_version", "source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_app", "destination_version", "destination_service", "destination_service_name",
	"destination_service_namespace", "destination_canonical_service", "destination_canonical_revision",
	"destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
}

// Istio's default buckets: duration in milliseconds, sizes in bytes.
var (
	durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	sizeBuckets     = prometheus.ExponentialBuckets(1, 10, 9) // 1 B … 100 MB
)

// istioMetrics are Istio's standard metrics, with Istio's names, help
// texts and labels, so existing dashboards and Kiali-style queries work.
type istioMetrics struct {
	requests             *prometheus.CounterVec
	duration, reqBytes   *prometheus.HistogramVec
	respBytes            *prometheus.HistogramVec
	tcpOpened, tcpClosed *prometheus.CounterVec
	tcpSent, tcpReceived *prometheus.CounterVec
}

func newIstioMetrics() istioMetrics {
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	hist := func(name, help string, b []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: b}, requestLabels)
	}
	return istioMetrics{
		requests:    counter("istio_requests_total", "Requests handled by the mesh proxy.", requestLabels),
		duration:    hist("istio_request_duration_milliseconds", "Duration of requests, in milliseconds (Istio's name and unit).", durationBuckets),
		reqBytes:    hist("istio_request_bytes", "Request body sizes.", sizeBuckets),
		respBytes:   hist("istio_response_bytes", "Response body sizes.", sizeBuckets),
		tcpOpened:   counter("istio_tcp_connections_opened_total", "TCP connections opened.", tcpLabels),
		tcpClosed:   counter("istio_tcp_connections_closed_total", "TCP connections closed.", tcpLabels),
		tcpSent:     counter("istio_tcp_sent_bytes_total", "Bytes sent to the client of TCP connections (every 15 s and at close).", tcpLabels),
		tcpReceived: counter("istio_tcp_received_bytes_total", "Bytes received from the client of TCP connections (every 15 s and at close).", tcpLabels),
	}
}

func (im *istioMetrics) register(r *prometheus.Registry) {
	r.MustRegister(im.requests, im.duration, im.reqBytes, im.respBytes, im.tcpOpened, im.tcpClosed, im.tcpSent, im.tcpReceived)
}

// callKey is what the labels of a call depend on; calls with equal keys
// share their series, looked up without building the 25 label values.
type callKey struct {
	reporter, src, srcPrincipal, dst, dstPrincipal string
	flags, protocol, security, grpc                string
	status                                         uint32
	reached                                        bool // an endpoint answered: the destination workload is known
}

type callSeries struct {
	requests                      prometheus.Counter
	duration, reqBytes, respBytes prometheus.Observer
}

// ObserveCall counts one request the proxy handled (either reporter).
func (m *Metrics) ObserveCall(c *api.Call) {
	if m == nil || c == nil {
		return
	}
	k := callKey{
		reporter: c.Reporter, src: c.SourceWorkload, srcPrincipal: c.SourcePrincipal,
		dst: c.DestinationService, dstPrincipal: c.DestinationPrincipal,
		flags: c.Flags, protocol: c.Protocol, security: c.ConnectionSecurityPolicy, status: c.Status,
		grpc:    grpcLabel(c.GrpcStatus),
		reached: c.Reporter == "destination" || c.Endpoint != "",
	}
	m.callMu.RLock()
	s := m.calls[k]
	m.callMu.RUnlock()
	if s == nil {
		s = m.seriesOf(k)
	}
	s.requests.Inc()
	s.duration.Observe(float64(c.LatencyUs) / 1000)
	s.reqBytes.Observe(float64(c.RequestBytes))
	s.respBytes.Observe(float64(c.ResponseBytes))
	if c.Reporter == "source" {
		m.rates.record(c.DestinationService, c.Status >= 500 || c.Status == 0, time.Now())
	}
}

func (m *Metrics) seriesOf(k callKey) *callSeries {
	m.callMu.Lock()
	defer m.callMu.Unlock()
	if s := m.calls[k]; s != nil {
		return s
	}
	l := requestValues(k)
	s := &callSeries{
		requests: m.istio.requests.WithLabelValues(l...),
		duration: m.istio.duration.WithLabelValues(l...),
		reqBytes: m.istio.reqBytes.WithLabelValues(l...), respBytes: m.istio.respBytes.WithLabelValues(l...),
	}
	m.calls[k] = s
	return s
}

// requestValues are the values of requestLabels for a call.
func requestValues(k callKey) []string {
	v := peerValues(k.reporter, k.src, k.srcPrincipal, k.dst, k.dstPrincipal, k.reached)
	return append(v, requestProtocol(k.protocol), strconv.FormatUint(uint64(k.status), 10), k.grpc,
		or(k.flags, "-"), or(k.security, unknown))
}

// peerValues are the labels from reporter to destination_cluster. Our
// workloads are instances of one service each, so the workload and the
// canonical service are the service's name; without version labels the
// canonical revision is "latest", as in Istio. Apps, versions and
// clusters are not known: "unknown".
func peerValues(reporter, src, srcPrincipal, dst, dstPrincipal string, reached bool) []string {
	sns, sname := split(src)
	dns, dname := split(dst)
	dwl, dwns := unknown, unknown
	if reached && dst != "" {
		dwl, dwns = dname, dns
	}
	return []string{
		or(reporter, unknown),
		sname, sns, or(srcPrincipal, unknown), unknown, unknown, sname, revision(src), unknown,
		dwl, dwns, or(dstPrincipal, unknown), unknown, unknown, ServiceHost(dst), dname, dns,
		dname, revision(dst), unknown,
	}
}

// ServiceHost is destination_service for a service "ns/svc": its mesh DNS
// name, "svc.ns.svc" (Istio's is the Kubernetes host, svc.ns.svc.cluster.local).
func ServiceHost(nsSvc string) string {
	ns, name := split(nsSvc)
	if ns == unknown {
		return unknown
	}
	return name + "." + ns + ".svc"
}

func split(nsSvc string) (ns, name string) {
	ns, name, ok := strings.Cut(nsSvc, "/")
	if !ok || ns == "" || name == "" {
		return unknown, unknown
	}
	return ns, name
}

func revision(nsSvc string) string {
	if ns, _ := split(nsSvc); ns == unknown {
		return unknown
	}
	return "latest"
}

// grpcLabel is grpc_response_status for a call's grpc-status: "" for
// calls that are not gRPC, as in Istio; a code the gRPC spec does not
// define (0–16) is "unknown", so a server cannot grow the label set.
func grpcLabel(status string) string {
	if status == "" {
		return ""
	}
	if n, err := strconv.Atoi(status); err == nil && n >= 0 && n <= 16 {
		return strconv.Itoa(n)
	}
	return unknown
}

// requestProtocol is Istio's request_protocol: "http" for HTTP/1.x and
// HTTP/2 alike, "grpc" for gRPC calls.
func requestProtocol(proto string) string {
	if strings.HasPrefix(proto, "HTTP/") {
		return "http"
	}
	return or(strings.ToLower(proto), unknown)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
