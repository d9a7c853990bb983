package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is what the agent reports at scrape time, read through these
// functions when Prometheus scrapes (nothing is copied in between). A nil
// function leaves its metrics out.
type State struct {
	Version string
	// Datapath returns the eBPF decision counters, each summed over CPUs.
	Datapath func() (map[string]uint64, error)
	// Registry returns the link to the control plane; ok=false standalone.
	Registry func() (r RegistryState, ok bool)
	// Certificates returns the workload and node certificates held.
	Certificates func() []Certificate
	// Workloads returns the enrolled workloads per "ns/svc": how many, how
	// many degraded, and the proxied connections open for them.
	Workloads func() map[string]WorkloadState
	// Tunnels returns the HBONE tunnels accepted and the plaintext
	// connections refused by mtls: required, since start.
	Tunnels func() (accepted, plaintextRefused uint64)
}

// RegistryState is the agent's registry sync.
type RegistryState struct {
	Connected bool
	LastSync  time.Time // zero: never synced
	Revision  int64
	Services  int
	Lag       Histogram // control plane send → applied here, per delta
}

// Histogram is a distribution kept elsewhere, in seconds.
type Histogram struct {
	Bounds []float64 // upper bounds, increasing
	Counts []uint64  // per bucket (not cumulative), len(Bounds)+1: the last is +Inf
	Sum    float64
}

// Certificate is one identity's certificate.
type Certificate struct {
	Identity string // SPIFFE ID
	NotAfter time.Time
}

// WorkloadState counts a service's workloads on this node.
type WorkloadState struct {
	Serving, Degraded int
	Connections       int // proxied connections open
}

// Watch makes every scrape read s.
func (m *Metrics) Watch(s State) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(&stateCollector{s: s, node: m.node})
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descInfo      = desc("hms_agent_info", "The agent's node and version; always 1.", "node", "version")
	descDatapath  = desc("hms_datapath_events_total", "eBPF datapath decisions by counter, summed over CPUs.", "event")
	descDPErr     = desc("hms_datapath_read_errors", "1 when the datapath counters could not be read at this scrape.")
	descConnected = desc("hms_registry_connected", "1 while the stream to the control plane is up.")
	descSyncAge   = desc("hms_registry_last_sync_age_seconds", "Time since a registry snapshot or delta was last applied.")
	descRevision  = desc("hms_registry_revision", "Registry revision of the agent's table.")
	descServices  = desc("hms_registry_services", "Services in the agent's registry table.")
	descLag       = desc("hms_registry_propagation_lag_seconds", "Time from the control plane sending a delta to the agent applying it.")
	descCert      = desc("hms_certificate_seconds_to_expiry", "Seconds until the certificate expires (negative once expired).", "identity")
	descWorkloads = desc("hms_workloads", "Enrolled workloads by service and state.", "workload", "state")
	descConns     = desc("hms_proxy_connections_open", "Proxied connections open, by the enrolled workload they serve.", "workload")
	descAccepted  = desc("hms_hbone_tunnels_accepted_total", "HBONE tunnels accepted: caller verified and allowed.")
	descPlainRef  = desc("hms_plaintext_refused_total", "Plaintext connections refused because the destination requires mTLS.")
)

type stateCollector struct {
	s    State
	node string
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descDatapath, descDPErr, descConnected, descSyncAge,
		descRevision, descServices, descLag, descCert, descWorkloads, descConns, descAccepted, descPlainRef} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge(descInfo, 1, c.node, or(s.Version, unknown))
	if s.Datapath != nil {
		cs, err := s.Datapath()
		dpErr := 0.0
		if err != nil {
			dpErr = 1
		}
		gauge(descDPErr, dpErr)
		for name, v := range cs {
			counter(descDatapath, float64(v), name)
		}
	}
	if s.Registry != nil {
		if r, ok := s.Registry(); ok {
			c.collectRegistry(ch, r)
		}
	}
	if s.Certificates != nil {
		now := time.Now()
		for _, cert := range s.Certificates() {
			gauge(descCert, cert.NotAfter.Sub(now).Seconds(), cert.Identity)
		}
	}
	if s.Workloads != nil {
		for wl, st := range s.Workloads() {
			gauge(descWorkloads, float64(st.Serving), wl, "serving")
			gauge(descWorkloads, float64(st.Degraded), wl, "degraded")
			gauge(descConns, float64(st.Connections), wl)
		}
	}
	if s.Tunnels != nil {
		acc, plain := s.Tunnels()
		counter(descAccepted, float64(acc))
		counter(descPlainRef, float64(plain))
	}
}

func (c *stateCollector) collectRegistry(ch chan<- prometheus.Metric, r RegistryState) {
	up := 0.0
	if r.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, up)
	if !r.LastSync.IsZero() {
		ch <- prometheus.MustNewConstMetric(descSyncAge, prometheus.GaugeValue, time.Since(r.LastSync).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(r.Revision))
	ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(r.Services))
	if h, err := r.Lag.constHistogram(descLag); err == nil {
		ch <- h
	}
}

// constHistogram turns h into a Prometheus histogram (cumulative buckets).
func (h Histogram) constHistogram(d *prometheus.Desc) (prometheus.Metric, error) {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var total uint64
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			total += h.Counts[i]
		}
		buckets[b] = total
	}
	if len(h.Counts) > len(h.Bounds) {
		total += h.Counts[len(h.Bounds)]
	}
	return prometheus.NewConstHistogram(d, total, h.Sum, buckets)
}
