package control

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// Embedded etcd limits: raised so a large manifest (one transaction) or a
// node with many instances is never cut.
const (
	etcdMaxTxnOps       = 16384
	etcdMaxRequestBytes = 32 << 20
	etcdQuotaBytes      = 8 << 30
	// etcdKeepRevisions: auto-compaction keeps this many revisions, well
	// beyond the hub's ring, so resuming agents find their history.
	etcdKeepRevisions = "10000"
	etcdMemberName    = "hms-control"
	etcdStartTimeout  = time.Minute
)

// embeddedConfig is the embedded single member in dataDir/etcd, on
// loopback only.
func (s *Server) embeddedConfig(quiet *atomic.Bool) *embed.Config {
	ec := embed.NewConfig()
	ec.Name = etcdMemberName
	ec.Dir = filepath.Join(s.cfg.DataDir, "etcd")
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(s.cfg.EtcdClientPort)}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(s.cfg.EtcdPeerPort)}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	ec.ListenMetricsUrls = nil
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.InitialClusterToken = "hms-control"
	ec.AutoCompactionMode = embed.CompactorModeRevision
	ec.AutoCompactionRetention = etcdKeepRevisions
	ec.MaxTxnOps = etcdMaxTxnOps
	ec.MaxRequestBytes = etcdMaxRequestBytes
	ec.QuotaBackendBytes = etcdQuotaBytes
	ec.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	ec.LogLevel = "warn"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(s.cfg.Log, zapcore.WarnLevel, quiet))
	return ec
}

// startEmbedded starts the embedded member and waits until it serves. stop
// closes it, quietly.
func (s *Server) startEmbedded(ctx context.Context) (stop func(), err error) {
	quiet := new(atomic.Bool)
	ec := s.embeddedConfig(quiet)
	if err := os.MkdirAll(ec.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("create etcd data dir: %w", err)
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", ec.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		s.log.Info("embedded etcd ready", "dir", ec.Dir, "client", ec.ListenClientUrls[0].String())
		return func() { quiet.Store(true); e.Close() }, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	case <-time.After(etcdStartTimeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s not ready after %s", ec.Dir, etcdStartTimeout)
	}
}

// etcdEndpoints is where the client connects: the configured cluster, or
// the embedded member.
func (s *Server) etcdEndpoints() []string {
	if len(s.cfg.EtcdEndpoints) > 0 {
		return s.cfg.EtcdEndpoints
	}
	return []string{"http://127.0.0.1:" + strconv.Itoa(s.cfg.EtcdClientPort)}
}

func (s *Server) newClient() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:        s.etcdEndpoints(),
		DialTimeout:      s.cfg.RequestTimeout,
		AutoSyncInterval: time.Minute,
		// Keepalive pings notice a dead member, so the balancer moves on.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		MaxCallSendMsgSize:   etcdMaxRequestBytes,
		Logger:               zapLogger(s.cfg.Log, zapcore.ErrorLevel, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", s.etcdEndpoints(), err)
	}
	return cli, nil
}
