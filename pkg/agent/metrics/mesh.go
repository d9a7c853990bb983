package metrics

import (
	"maps"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CircuitStates are the states of a circuit breaker, as hms_circuit_state
// reports them (one series per state, 1 for the current one).
var CircuitStates = []string{"closed", "open", "half-open"}

// meshMetrics are the proxy's own events: retries, rate limiting, circuit
// breakers and refused tunnels. Destinations are labelled like Istio's
// destination_service, so they join with istio_requests_total.
type meshMetrics struct {
	retries, budgetExhausted, rateLimited *prometheus.CounterVec
	queueWait                             *prometheus.HistogramVec
	circuit                               *prometheus.GaugeVec
	denied                                *prometheus.CounterVec
}

func newMeshMetrics() meshMetrics {
	dst := []string{"destination_service"}
	counter := func(name, help string, labels []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return meshMetrics{
		retries:         counter("hms_retries_total", "Requests retried to another endpoint.", dst),
		budgetExhausted: counter("hms_retry_budget_exhausted_total", "Retries not made because the destination's retry budget was spent.", dst),
		rateLimited:     counter("hms_rate_limited_total", "Requests refused with 429 by the destination's rate limit.", dst),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hms_rate_limit_queue_seconds", Help: "Time requests waited in a rate limit's queue before being admitted.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25},
		}, dst),
		circuit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hms_circuit_state", Help: "Circuit breaker state per destination: 1 for the current state.",
		}, []string{"destination_service", "state"}),
		denied: counter("hms_denied_total", "Tunnels and calls refused by identity or policy, by reason.", []string{"reason"}),
	}
}

func (mm *meshMetrics) register(r *prometheus.Registry) {
	r.MustRegister(mm.retries, mm.budgetExhausted, mm.rateLimited, mm.queueWait, mm.circuit, mm.denied)
}

// Retry counts a retry to dst ("ns/svc").
func (m *Metrics) Retry(dst string) {
	if m != nil {
		m.mesh.retries.WithLabelValues(ServiceHost(dst)).Inc()
	}
}

// RetryBudgetExhausted counts a retry to dst that the budget refused.
func (m *Metrics) RetryBudgetExhausted(dst string) {
	if m != nil {
		m.mesh.budgetExhausted.WithLabelValues(ServiceHost(dst)).Inc()
	}
}

// RateLimited counts a request to dst answered 429.
func (m *Metrics) RateLimited(dst string) {
	if m != nil {
		m.mesh.rateLimited.WithLabelValues(ServiceHost(dst)).Inc()
	}
}

// RateLimitQueued records how long a request to dst was queued.
func (m *Metrics) RateLimitQueued(dst string, wait time.Duration) {
	if m != nil {
		m.mesh.queueWait.WithLabelValues(ServiceHost(dst)).Observe(wait.Seconds())
	}
}

// SetCircuit records the breaker state of dst: "closed", "open" or
// "half-open". Non-closed states are also kept for Circuits.
func (m *Metrics) SetCircuit(dst, state string) {
	if m == nil {
		return
	}
	m.circMu.Lock()
	defer m.circMu.Unlock() // held across the gauges: concurrent changes apply in order
	if state == "closed" {
		delete(m.circuits, dst)
	} else {
		m.circuits[dst] = state
	}
	host := ServiceHost(dst)
	for _, s := range CircuitStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.mesh.circuit.WithLabelValues(host, s).Set(v)
	}
}

// Circuits returns the destinations ("ns/svc") whose circuit is not
// closed, with their state.
func (m *Metrics) Circuits() map[string]string {
	if m == nil {
		return map[string]string{}
	}
	m.circMu.Lock()
	defer m.circMu.Unlock()
	return maps.Clone(m.circuits)
}

// Deny counts a refused tunnel or call; reason is one of the agent's fixed
// reasons ("policy", "revoked", "no identity", ...), written snake_case.
func (m *Metrics) Deny(reason string) {
	if m != nil {
		m.mesh.denied.WithLabelValues(strings.ReplaceAll(or(reason, unknown), " ", "_")).Inc()
	}
}
