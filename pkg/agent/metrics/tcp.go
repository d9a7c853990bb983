package metrics

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// tcpFlushInterval is how often the bytes of a connection still open are
// reported: Istio's tcp_reporting_duration (15 s). Tests shorten it.
var tcpFlushInterval = 15 * time.Second

// TCPLabels describe one proxied TCP connection; services and workloads
// are "ns/svc". Empty fields are reported as "unknown".
type TCPLabels struct {
	Reporter             string // "source" or "destination"
	SourceWorkload       string
	SourcePrincipal      string
	DestinationService   string
	DestinationPrincipal string
	SecurityPolicy       string // "mutual_tls", "none"
}

func (l TCPLabels) values() []string {
	v := peerValues(l.Reporter, l.SourceWorkload, l.SourcePrincipal, l.DestinationService, l.DestinationPrincipal, true)
	return append(v, "tcp", "-", or(l.SecurityPolicy, unknown))
}

// tcpSeries are the four counters of one label set.
type tcpSeries struct {
	opened, closed, sent, received prometheus.Counter
}

func (m *Metrics) tcpSeriesOf(l TCPLabels) *tcpSeries {
	m.tcpMu.RLock()
	s := m.tcp[l]
	m.tcpMu.RUnlock()
	if s != nil {
		return s
	}
	m.tcpMu.Lock()
	defer m.tcpMu.Unlock()
	if s := m.tcp[l]; s != nil {
		return s
	}
	v := l.values()
	s = &tcpSeries{
		opened: m.istio.tcpOpened.WithLabelValues(v...), closed: m.istio.tcpClosed.WithLabelValues(v...),
		sent: m.istio.tcpSent.WithLabelValues(v...), received: m.istio.tcpReceived.WithLabelValues(v...),
	}
	m.tcp[l] = s
	return s
}

// TCPConn reports one proxied connection under one reporter's labels.
type TCPConn struct {
	s              *tcpSeries
	sent, received *atomic.Int64 // the connection's own counts, updated by its copy loops

	// mu guards the fields below.
	mu                     sync.Mutex
	doneSent, doneReceived int64 // already added to the counters
	closed                 bool
	timer                  *time.Timer
}

// OpenTCP counts a connection established to its upstream and reports its
// bytes while it lasts: sent and received are its running counts of bytes
// to the client and from it (Istio's istio_tcp_sent_bytes_total is "bytes
// sent during response", received "during request"), read every
// tcpFlushInterval and at Close. The label values are looked up once here,
// not per chunk. A failed connect is not a connection: do not open one.
func (m *Metrics) OpenTCP(l TCPLabels, sent, received *atomic.Int64) *TCPConn {
	if m == nil {
		return nil
	}
	c := &TCPConn{s: m.tcpSeriesOf(l), sent: sent, received: received}
	c.s.opened.Inc()
	c.mu.Lock()
	c.timer = time.AfterFunc(tcpFlushInterval, c.tick)
	c.mu.Unlock()
	return c
}

// tick reports the bytes of a connection still open and rearms.
func (c *TCPConn) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.flushLocked()
	c.timer.Reset(tcpFlushInterval)
}

// flushLocked adds the bytes counted since the last flush.
func (c *TCPConn) flushLocked() {
	if s := c.sent.Load(); s > c.doneSent {
		c.s.sent.Add(float64(s - c.doneSent))
		c.doneSent = s
	}
	if r := c.received.Load(); r > c.doneReceived {
		c.s.received.Add(float64(r - c.doneReceived))
		c.doneReceived = r
	}
}

// Close counts the connection closed and reports its remaining bytes.
// Calling it again only reports bytes counted since (a copy that ended
// after the first Close), so a wrapper may call it from every Close.
func (c *TCPConn) Close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
	if c.closed {
		return
	}
	c.closed = true
	c.timer.Stop()
	c.s.closed.Inc()
}
