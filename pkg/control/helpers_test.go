package control

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// testConfig is an embedded single member in a temp dir on free ports.
func testConfig(t *testing.T) Config {
	return Config{
		DataDir:        t.TempDir(),
		Listen:         "127.0.0.1:0",
		HTTPAddr:       "off",
		EtcdClientPort: freePort(t),
		EtcdPeerPort:   freePort(t),
		Heartbeat:      300 * time.Millisecond,
		RequestTimeout: 2 * time.Second,
		Log:            testLogger(),
	}
}

// startServer runs a Server until the test ends (or stop is called) and
// waits until it serves.
func startServer(t *testing.T, cfg Config) (s *Server, stop func()) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(context.Background()) }()
	stop = func() {
		s.Close()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
		errc <- nil // later stops see a clean exit
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready after 30s")
	}
	return s, stop
}

// etcdClient is a direct etcd client, for checks below the API.
func etcdClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		Logger: zapLogger(testLogger(), zapcore.ErrorLevel, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// dial returns gRPC clients of s.
func dial(t *testing.T, s *Server) (api.RegistryClient, api.AgentsClient) {
	t.Helper()
	return dialAddr(t, s.Addr())
}

func dialAddr(t *testing.T, addr string) (api.RegistryClient, api.AgentsClient) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return api.NewRegistryClient(cc), api.NewAgentsClient(cc)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func svc(name string, port uint32) *api.Service {
	return &api.Service{Name: name, Ports: []uint32{port}}
}

func apply(t *testing.T, reg api.RegistryClient, svcs ...*api.Service) *api.ApplyResponse {
	t.Helper()
	resp, err := reg.Apply(ctxT(t, 10*time.Second), &api.ApplyRequest{Services: svcs})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return resp
}

func list(t *testing.T, reg api.RegistryClient) *api.ListResponse {
	t.Helper()
	resp, err := reg.List(ctxT(t, 10*time.Second), &api.ListRequest{})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return resp
}

// vips maps "ns/name" → VIP of every listed service.
func vips(l *api.ListResponse) map[string]string {
	m := map[string]string{}
	for _, s := range l.GetServices() {
		m[s.GetNamespace()+"/"+s.GetName()] = s.GetVip()
	}
	return m
}

// eventually polls cond every 20ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
