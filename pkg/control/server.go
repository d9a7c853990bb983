package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// Server is one control-plane replica.
type Server struct {
	cfg     Config
	log     *slog.Logger
	ready   chan struct{}
	metrics *controlMetrics
	stats   *meshStats // the agents' latest Stats (MeshStats)
	taps    *tapRelay  // this replica's agent streams and taps (TapCalls)

	// mu guards the fields below.
	mu      sync.Mutex
	addr    string
	cancel  context.CancelFunc // ends Run; nil until Run starts
	done    chan struct{}      // closed when Run returns
	closed  bool
	started bool
}

// New checks cfg and returns a Server. It starts nothing.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("control config: %w", err)
	}
	return &Server{cfg: cfg, log: cfg.Log, ready: make(chan struct{}), metrics: newControlMetrics(),
		stats: newMeshStats(), taps: newTapRelay(cfg.Log)}, nil
}

// Addr is the gRPC listen address once serving ("" before).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Ready is closed once the replica serves its API.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Close stops Run and waits for it to return. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

// Run starts the embedded etcd (or connects to the configured cluster) and
// serves the gRPC API and the HTTP endpoints until ctx ends or Close.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.closed || s.started {
		s.mu.Unlock()
		return errors.New("control: server already ran or was closed")
	}
	ctx, cancel := context.WithCancel(ctx)
	s.started, s.cancel, s.done = true, cancel, make(chan struct{})
	s.mu.Unlock()
	defer close(s.done)
	defer cancel()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	if len(s.cfg.EtcdEndpoints) == 0 {
		stopEtcd, err := s.startEmbedded(ctx)
		if err != nil {
			return err
		}
		defer stopEtcd()
	}
	cli, err := s.newClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	return s.serve(ctx, cli)
}

// serve loads the CA, then runs the hub, the gRPC and the HTTP servers on
// cli until ctx ends.
func (s *Server) serve(ctx context.Context, cli *clientv3.Client) error {
	s.metrics.instrument(cli)
	st := &store{cli: cli, cidr: s.cfg.VIPCIDR, timeout: s.cfg.RequestTimeout, log: s.log}
	revoked := newRevocations()
	h := newHub(cli, s.log)
	h.observe = revoked.observe
	h.resync = func() {
		if err := loadRevocations(ctx, st, revoked); err != nil {
			s.log.Warn("reloading revocations failed", "err", err)
		}
	}
	from, err := s.startHub(ctx, h)
	if err != nil {
		return err
	}
	ca, err := s.loadCA(ctx, cli)
	if err != nil {
		return err
	}
	if err := loadRevocations(ctx, st, revoked); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen for the api on %s: %w", s.cfg.Listen, err)
	}
	rotCtx, stopRot := context.WithCancel(ctx)
	defer stopRot()
	rot := s.servingRotator(ca, lis.Addr())
	if err := rot.Start(rotCtx); err != nil {
		lis.Close()
		return fmt.Errorf("serving certificate: %w", err)
	}
	defer rot.Wait()
	defer stopRot()
	admin, err := s.adminConfig(ca)
	if err != nil {
		lis.Close()
		return err
	}
	stop := make(chan struct{})
	var expiries sync.WaitGroup
	gs := s.newGRPC(grpcDeps{st: st, hub: h, ca: ca, revoked: revoked, rot: rot}, stop, &expiries)
	hs, hlis, err := s.listenHTTP(cli, st)
	if err != nil {
		lis.Close()
		return err
	}
	s.mu.Lock()
	s.addr = lis.Addr().String()
	s.mu.Unlock()

	errc := make(chan error, 3)
	var wg sync.WaitGroup
	hubCtx, stopHub := context.WithCancel(ctx)
	defer stopHub()
	goRun(&wg, errc, "registry watch", func() error { return h.run(hubCtx, from) })
	goRun(&wg, errc, "grpc api", func() error { return gs.Serve(lis) })
	if hs != nil {
		goRun(&wg, errc, "http", func() error { return ignoreClosed(hs.Serve(hlis)) })
	}
	if err := writeAdminConfig(s.cfg.DataDir, lis.Addr(), admin); err != nil {
		s.log.Warn("cannot write the admin config", "err", err)
	}
	close(s.ready)
	s.log.Info("control plane serving", "api", s.addr, "http", s.cfg.HTTPAddr, "etcd", s.etcdEndpoints(),
		"trust_domain", ca.TrustDomain, "ca", ca.Hash())

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	close(stop)
	s.taps.close()
	shutdownGRPC(gs)
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs.Shutdown(sctx)
		cancel()
	}
	stopHub()
	wg.Wait()
	expiries.Wait()
	return err
}

// adminConfig issues the admin credential for admin.yaml.
func (s *Server) adminConfig(ca *mtls.CA) (AdminConfig, error) {
	cert, key, err := adminCredential(ca)
	if err != nil {
		return AdminConfig{}, fmt.Errorf("admin credential: %w", err)
	}
	return AdminConfig{CA: string(ca.BundlePEM()), Cert: string(cert), Key: string(key)}, nil
}

// loadRevocations fills the set from etcd; the hub's watch keeps it.
func loadRevocations(ctx context.Context, st *store, r *revocations) error {
	octx, cancel := st.opCtx(ctx)
	defer cancel()
	resp, err := st.cli.Get(octx, kindPrefix(kindRevoked), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("read revocations: %w", err)
	}
	for _, kv := range resp.Kvs {
		r.set(strings.TrimPrefix(string(kv.Key), kindPrefix(kindRevoked)), true)
	}
	return nil
}

// grpcDeps is what the API's services share.
type grpcDeps struct {
	st      *store
	hub     *hub
	ca      *mtls.CA
	revoked *revocations
	rot     *mtls.Rotator
}

// newGRPC is the API server, on TLS 1.3 from the mesh CA with every call
// authorized: large requests (a big manifest) are fine, agents may ping.
func (s *Server) newGRPC(d grpcDeps, stop <-chan struct{}, expiries *sync.WaitGroup) *grpc.Server {
	auth := &authorizer{admin: mtls.WorkloadID(d.ca.TrustDomain, systemNamespace, adminService), revoked: d.revoked}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(serverTLS(d.ca, d.rot.GetCertificate))),
		grpc.ChainUnaryInterceptor(s.metrics.unary(), auth.unary),
		grpc.ChainStreamInterceptor(s.metrics.stream(), auth.stream),
		grpc.MaxRecvMsgSize(etcdMaxRequestBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	api.RegisterRegistryServer(gs, &registryService{st: d.st, trustDomain: d.ca.TrustDomain, certTTL: s.cfg.CertTTL, taps: s.taps})
	api.RegisterAgentsServer(gs, &agentsService{
		st: d.st, hub: d.hub, heartbeat: s.cfg.Heartbeat, leaseTTL: s.cfg.leaseTTL(), log: s.log,
		revoked: d.revoked, stop: stop, expiries: expiries, taps: s.taps, stats: s.stats,
	})
	api.RegisterIdentityServer(gs, &identityService{st: d.st, ca: d.ca, ttl: s.cfg.CertTTL, revoked: d.revoked, log: s.log})
	s.metrics.initialize(gs)
	return gs
}

// startHub primes the hub, retrying until etcd answers or ctx ends.
func (s *Server) startHub(ctx context.Context, h *hub) (int64, error) {
	for {
		from, err := h.start(ctx, s.cfg.RequestTimeout)
		if err == nil {
			return from, nil
		}
		s.log.Warn("etcd not reachable yet; retrying", "endpoints", s.etcdEndpoints(), "err", err)
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("etcd %v not reachable: %w", s.etcdEndpoints(), err)
		case <-time.After(time.Second):
		}
	}
}

func goRun(wg *sync.WaitGroup, errc chan<- error, what string, f func() error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := f(); err != nil {
			errc <- fmt.Errorf("%s: %w", what, err)
		}
	}()
}

// shutdownGRPC lets calls finish, but not for long: agent streams end on
// their own once stop is closed, unary calls are bounded by etcd timeouts.
func shutdownGRPC(gs *grpc.Server) {
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		gs.Stop()
		<-done
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
