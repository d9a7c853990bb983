package control

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
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

// dial returns the admin's clients of s, with the credential of its
// admin.yaml, as the CLI does.
func dial(t *testing.T, s *Server) (api.RegistryClient, api.IdentityClient) {
	t.Helper()
	cc := adminConn(t, s)
	return api.NewRegistryClient(cc), api.NewIdentityClient(cc)
}

func adminConn(t *testing.T, s *Server) *grpc.ClientConn {
	t.Helper()
	ac, err := LoadAdminConfig(filepath.Join(s.cfg.DataDir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := ac.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return dialTLS(t, s.Addr(), tc)
}

func dialTLS(t *testing.T, addr string, tc *tls.Config) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// createToken makes a join token as the admin.
func createToken(t *testing.T, s *Server, ttl time.Duration) string {
	t.Helper()
	_, id := dial(t, s)
	r, err := id.CreateToken(ctxT(t, 10*time.Second), &api.CreateTokenRequest{TtlMs: ttl.Milliseconds()})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return r.Token
}

// join spends token on a certificate of node, as an agent's first contact
// does: no client certificate, the CA pinned by the token's hash.
func join(t *testing.T, s *Server, token, node string) (*api.JoinResponse, *tls.Certificate, error) {
	t.Helper()
	tc, err := JoinTLS(token)
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := mtls.NewCSR(key, mtls.NodeID(DefaultTrustDomain, node))
	if err != nil {
		t.Fatal(err)
	}
	id := api.NewIdentityClient(dialTLS(t, s.Addr(), tc))
	r, err := id.Join(ctxT(t, 10*time.Second), &api.JoinRequest{Token: token, Node: node, Csr: csr})
	if err != nil {
		return nil, nil, err
	}
	kp, err := mtls.KeyPair(r.ChainPem, key)
	if err != nil {
		t.Fatal(err)
	}
	return r, kp, nil
}

// testNode is a joined node's certificate and clients.
type testNode struct {
	name     string
	cert     *tls.Certificate
	bundle   []byte
	agents   api.AgentsClient
	identity api.IdentityClient
	registry api.RegistryClient // to check that a node is no admin
}

// joinNode creates a token, joins node with it and dials s as the node.
func joinNode(t *testing.T, s *Server, node string) *testNode {
	t.Helper()
	r, kp, err := join(t, s, createToken(t, s, time.Minute), node)
	if err != nil {
		t.Fatalf("join %s: %v", node, err)
	}
	return nodeWithCert(t, s, node, r.BundlePem, kp)
}

func nodeWithCert(t *testing.T, s *Server, node string, bundle []byte, kp *tls.Certificate) *testNode {
	cc := dialTLS(t, s.Addr(), AgentTLS(bundle, mtls.StaticClientCertificate(kp)))
	return &testNode{name: node, cert: kp, bundle: bundle, agents: api.NewAgentsClient(cc),
		identity: api.NewIdentityClient(cc), registry: api.NewRegistryClient(cc)}
}

// nodeAgents is the Agents client of a freshly joined node.
func nodeAgents(t *testing.T, s *Server, node string) api.AgentsClient {
	t.Helper()
	return joinNode(t, s, node).agents
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
