package e2e

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/api"
	"github.com/hms-node/hms-node/pkg/control"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// benchControl is an in-process control plane with its embedded etcd in a
// temp dir, on free loopback ports.
type benchControl struct {
	srv     *control.Server
	dataDir string
	conn    *grpc.ClientConn // the admin's, for Registry calls
	reg     api.RegistryClient
	id      api.IdentityClient // the admin's, for join tokens
}

func startBenchControl(b *testing.B, heartbeat time.Duration) *benchControl {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "control")
	log := benchLog()
	srv, err := control.New(control.Config{
		DataDir: dir, Listen: "127.0.0.1:0", HTTPAddr: "off",
		EtcdClientPort: freePort(b), EtcdPeerPort: freePort(b), Heartbeat: heartbeat, Log: log,
	})
	if err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(context.Background()) }()
	b.Cleanup(func() { srv.Close() })
	select {
	case <-srv.Ready():
	case err := <-errc:
		b.Fatalf("control plane: %v", err)
	case <-time.After(time.Minute):
		b.Fatal("control plane not ready after 1m")
	}
	ac, err := control.LoadAdminConfig(filepath.Join(dir, "admin.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	tc, err := ac.TLS()
	if err != nil {
		b.Fatal(err)
	}
	conn := dialControl(b, srv.Addr(), tc, bigRecv)
	return &benchControl{srv: srv, dataDir: dir, conn: conn, reg: api.NewRegistryClient(conn), id: api.NewIdentityClient(conn)}
}

// joinNode trades a fresh join token for a certificate of node, as an
// agent's first start does, and returns the node's TLS config for the
// agent stream.
func (c *benchControl) joinNode(b *testing.B, node string) *tls.Config {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := c.id.CreateToken(ctx, &api.CreateTokenRequest{TtlMs: time.Hour.Milliseconds()})
	if err != nil {
		b.Fatalf("join token: %v", err)
	}
	jt, err := control.JoinTLS(tok.Token)
	if err != nil {
		b.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		b.Fatal(err)
	}
	csr, err := mtls.NewCSR(key, mtls.NodeID(control.DefaultTrustDomain, node))
	if err != nil {
		b.Fatal(err)
	}
	jc := dialControl(b, c.srv.Addr(), jt)
	defer jc.Close()
	r, err := api.NewIdentityClient(jc).Join(ctx, &api.JoinRequest{Token: tok.Token, Node: node, Csr: csr})
	if err != nil {
		b.Fatalf("join %s: %v", node, err)
	}
	kp, err := mtls.KeyPair(r.ChainPem, key)
	if err != nil {
		b.Fatal(err)
	}
	return control.AgentTLS(r.BundlePem, mtls.StaticClientCertificate(kp))
}

// benchLog logs the control plane's and the agents' events at Info, but
// embedded etcd's only from Error: its slow-request warnings would drown
// the tables.
func benchLog() *slog.Logger {
	h := slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})
	return slog.New(quietEtcd{h})
}

type quietEtcd struct{ slog.Handler }

func (q quietEtcd) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		etcd := false
		r.Attrs(func(a slog.Attr) bool {
			etcd = a.Key == "component" && a.Value.String() == "etcd"
			return !etcd
		})
		if etcd || r.Message == "agent connected" {
			return nil
		}
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietEtcd) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		if a.Key == "component" && a.Value.String() == "etcd" {
			return quietEtcd{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})}
		}
	}
	return quietEtcd{q.Handler.WithAttrs(as)}
}

func (q quietEtcd) WithGroup(name string) slog.Handler { return quietEtcd{q.Handler.WithGroup(name)} }

// bigRecv raises the client's receive limit above gRPC's default 4 MiB,
// which a snapshot of a large registry exceeds.
var bigRecv = grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32))

func dialControl(b *testing.B, addr string, tc *tls.Config, opts ...grpc.DialOption) *grpc.ClientConn {
	b.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// etcdDBSize is the size of the embedded etcd's bbolt file.
func (c *benchControl) etcdDBSize() int64 {
	fi, err := os.Stat(filepath.Join(c.dataDir, "etcd", "member", "snap", "db"))
	if err != nil {
		return -1
	}
	return fi.Size()
}

// benchAgent is one simulated agent: a registry.Client with its own Table
// and connection. run starts it; the benchmark's cleanup stops it.
type benchAgent struct {
	client *registry.Client
	table  *registry.Table
	cancel context.CancelFunc
	done   chan struct{}
}

func newBenchAgent(b *testing.B, cp *benchControl, node string, opts ...grpc.DialOption) *benchAgent {
	b.Helper()
	t := registry.NewTable()
	a := &benchAgent{table: t, done: make(chan struct{})}
	a.client = &registry.Client{Conn: dialControl(b, cp.srv.Addr(), cp.joinNode(b, node), opts...), Node: &api.Node{Name: node}, Table: t,
		Log: benchLog().With("agent", node)}
	return a
}

func (a *benchAgent) run(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { defer close(a.done); a.client.Run(ctx) }()
	b.Cleanup(a.stop)
}

func (a *benchAgent) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
}

// waitSynced waits until every agent applied a snapshot.
func waitSynced(b *testing.B, agents []*benchAgent, within time.Duration) {
	b.Helper()
	deadline := time.Now().Add(within)
	for _, a := range agents {
		for a.client.State().Revision == 0 {
			if time.Now().After(deadline) {
				b.Fatalf("agent %s not synced after %s: %+v", a.client.Node.Name, within, a.client.State())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// vipMap mirrors a table's VIP:ports into a real eBPF hash map laid out
// like hms_vips, the way the agent's syncVIPs does: only the difference is
// written.
type vipMap struct {
	m *ebpf.Map
	// mu guards cur.
	mu  sync.Mutex
	cur map[netip.AddrPort]uint32
}

// vipKeyBPF is struct vipkey of bpf/include/hms.h: VIP in network order,
// port in host order.
type vipKeyBPF struct {
	VIP  uint32
	Port uint32
}

// hmsVIPsSpec is hms_vips' layout (bpf/include/hms.h).
func hmsVIPsSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: 262144, Flags: 1 /* BPF_F_NO_PREALLOC */}
}

func newVIPMap(b *testing.B) *vipMap {
	b.Helper()
	m, err := ebpf.NewMap(hmsVIPsSpec())
	if err != nil {
		b.Fatalf("create VIP map: %v", err)
	}
	b.Cleanup(func() { m.Close() })
	return &vipMap{m: m, cur: map[netip.AddrPort]uint32{}}
}

func bpfVIPKey(vp netip.AddrPort) vipKeyBPF {
	a := vp.Addr().Unmap().As4()
	return vipKeyBPF{VIP: binary.LittleEndian.Uint32(a[:]), Port: uint32(vp.Port())}
}

func (v *vipMap) sync(t *registry.Table) error {
	want := map[netip.AddrPort]uint32{}
	for _, e := range t.VIPs() {
		want[e.Addr] = e.ID
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for vp, id := range want {
		if old, ok := v.cur[vp]; ok && old == id {
			continue
		}
		if err := v.m.Put(bpfVIPKey(vp), id); err != nil {
			return fmt.Errorf("set VIP %s: %w", vp, err)
		}
		v.cur[vp] = id
	}
	for vp := range v.cur {
		if _, ok := want[vp]; !ok {
			if err := v.m.Delete(bpfVIPKey(vp)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("delete VIP %s: %w", vp, err)
			}
			delete(v.cur, vp)
		}
	}
	return nil
}

// has reports whether the kernel map holds vp.
func (v *vipMap) has(vp netip.AddrPort) bool {
	var id uint32
	return v.m.Lookup(bpfVIPKey(vp), &id) == nil && id != 0
}

// heapInuse is HeapInuse after two full collections.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// durStats are nearest-rank percentiles of a set of durations.
type durStats struct{ p50, p90, p99, max time.Duration }

func statsOf(ds []time.Duration) durStats {
	if len(ds) == 0 {
		return durStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(i, 0)]
	}
	return durStats{rank(50), rank(90), rank(99), s[len(s)-1]}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
