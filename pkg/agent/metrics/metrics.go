package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one agent's registry and the series it updates. Every method
// is safe on a nil *Metrics (it does nothing), so agents built without
// metrics (unit tests) need no checks.
type Metrics struct {
	node string
	reg  *prometheus.Registry

	istio istioMetrics
	mesh  meshMetrics
	rates rates

	callMu sync.RWMutex // guards calls
	calls  map[callKey]*callSeries

	tcpMu sync.RWMutex // guards tcp
	tcp   map[TCPLabels]*tcpSeries

	circMu   sync.Mutex        // guards circuits
	circuits map[string]string // destination "ns/svc" → non-closed state
}

// New returns the metrics of the agent of node, on a registry of their own
// (never the default one) that also holds the Go runtime and process
// collectors.
func New(node string) *Metrics {
	m := &Metrics{
		node: node, reg: prometheus.NewRegistry(),
		calls: map[callKey]*callSeries{}, tcp: map[TCPLabels]*tcpSeries{}, circuits: map[string]string{},
	}
	m.istio = newIstioMetrics()
	m.mesh = newMeshMetrics()
	m.rates.init()
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.istio.register(m.reg)
	m.mesh.register(m.reg)
	return m
}

// Register adds a collector (the agent's scrape-time state) to the
// registry.
func (m *Metrics) Register(c prometheus.Collector) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(c)
}

// Gatherer is the registry, for tests and lint checks.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus text format. A collector
// that fails (a datapath map unreadable) costs its own series only.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
