package control

import (
	"context"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/hms-node/hms-node/pkg/api"
)

// sizeTimeout bounds the etcd reads of one scrape.
const sizeTimeout = 2 * time.Second

// controlMetrics are a replica's metrics, on its own registry, served on
// the HTTP listener's /metrics: API calls by method and code
// (grpc_server_*), streams open, etcd request latency, registry sizes.
type controlMetrics struct {
	reg     *prometheus.Registry
	grpc    *grpcprom.ServerMetrics
	streams *prometheus.GaugeVec
	etcd    *prometheus.HistogramVec
}

func newControlMetrics() *controlMetrics {
	m := &controlMetrics{
		reg:  prometheus.NewRegistry(),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "hms_control_streams_open", Help: "API streams open: agents' registry watches (Agents/Connect), taps.",
		}, []string{"grpc_service", "grpc_method"}),
		etcd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hms_control_etcd_request_duration_seconds", Help: "Latency of the replica's etcd requests, by operation and result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"op", "result"}),
	}
	m.reg.MustRegister(m.grpc, m.streams, m.etcd,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *controlMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// unary counts every call, the refused ones too: it runs before auth.
func (m *controlMetrics) unary() grpc.UnaryServerInterceptor { return m.grpc.UnaryServerInterceptor() }

func (m *controlMetrics) stream() grpc.StreamServerInterceptor {
	counted := m.grpc.StreamServerInterceptor()
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		svc, method := splitMethod(info.FullMethod)
		g := m.streams.WithLabelValues(svc, method)
		g.Inc()
		defer g.Dec()
		return counted(srv, ss, info, h)
	}
}

// splitMethod splits "/hms.v1.Agents/Connect" into service and method.
func splitMethod(full string) (string, string) {
	for i := len(full) - 1; i > 0; i-- {
		if full[i] == '/' {
			return full[1:i], full[i+1:]
		}
	}
	return "unknown", full
}

// initialize makes every method's series exist at 0 before its first call.
func (m *controlMetrics) initialize(gs *grpc.Server) { m.grpc.InitializeMetrics(gs) }

// instrument times cli's KV requests and counts the registry at scrape
// time; call it before cli is used.
func (m *controlMetrics) instrument(cli *clientv3.Client) {
	raw := cli.KV
	cli.KV = &timedKV{KV: raw, m: m}
	m.reg.MustRegister(&registrySizes{kv: raw})
}

func (m *controlMetrics) observe(op string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.etcd.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

// timedKV is a clientv3.KV that times each request.
type timedKV struct {
	clientv3.KV
	m *controlMetrics
}

func (k *timedKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	start := time.Now()
	r, err := k.KV.Put(ctx, key, val, opts...)
	k.m.observe("put", start, err)
	return r, err
}

func (k *timedKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	start := time.Now()
	r, err := k.KV.Get(ctx, key, opts...)
	k.m.observe("get", start, err)
	return r, err
}

func (k *timedKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	start := time.Now()
	r, err := k.KV.Delete(ctx, key, opts...)
	k.m.observe("delete", start, err)
	return r, err
}

func (k *timedKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	start := time.Now()
	r, err := k.KV.Do(ctx, op)
	k.m.observe("do", start, err)
	return r, err
}

func (k *timedKV) Txn(ctx context.Context) clientv3.Txn { return &timedTxn{Txn: k.KV.Txn(ctx), m: k.m} }

type timedTxn struct {
	clientv3.Txn
	m *controlMetrics
}

func (t *timedTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *timedTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *timedTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *timedTxn) Commit() (*clientv3.TxnResponse, error) {
	start := time.Now()
	r, err := t.Txn.Commit()
	t.m.observe("txn", start, err)
	return r, err
}

var (
	descObjects  = prometheus.NewDesc("hms_control_registry_objects", "Registry objects in etcd, by kind.", []string{"kind"}, nil)
	descRevision = prometheus.NewDesc("hms_control_registry_revision", "The etcd revision of the registry.", nil, nil)
)

// registrySizes counts the registry's keys per kind when scraped (one
// count-only read per kind; untimed, so scrapes do not skew the latency).
type registrySizes struct{ kv clientv3.KV }

func (r *registrySizes) Describe(ch chan<- *prometheus.Desc) { ch <- descObjects; ch <- descRevision }

func (r *registrySizes) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), sizeTimeout)
	defer cancel()
	var rev int64
	for _, kind := range []string{kindService, kindInstance, kindNode, kindExternal, kindRoute, kindRateLimit, kindVIP, kindRevoked, kindToken} {
		resp, err := r.kv.Get(ctx, kindPrefix(kind), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descObjects, err)
			return
		}
		rev = max(rev, resp.Header.GetRevision())
		ch <- prometheus.MustNewConstMetric(descObjects, prometheus.GaugeValue, float64(resp.Count), kind)
	}
	ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(rev))
}

// sentNow is d stamped with its send time, for the agents' propagation-lag
// metric. d is shared by every stream, so it is copied, not written.
func sentNow(d *api.Delta) *api.Delta {
	return &api.Delta{Revision: d.Revision, Changes: d.Changes, SentUnixNano: time.Now().UnixNano()}
}
