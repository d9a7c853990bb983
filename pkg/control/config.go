package control

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// Config configures a control-plane replica. The zero value of every field
// selects its documented default.
type Config struct {
	// DataDir holds the embedded etcd data (DataDir/etcd) and admin.yaml.
	// Default /var/lib/hms-control.
	DataDir string
	// Listen is the gRPC API address. Default 127.0.0.1:9090; a :0 port
	// picks a free one (see Server.Addr).
	Listen string
	// HTTPAddr serves /healthz and /readyz. Default 127.0.0.1:9091; "off"
	// disables it.
	HTTPAddr string
	// EtcdEndpoints selects an existing etcd cluster. Empty runs an embedded
	// single-member etcd in DataDir/etcd.
	EtcdEndpoints []string
	// EtcdClientPort is the embedded etcd's client port on 127.0.0.1.
	// Default 12379 (never 2379, so a real etcd can run beside it).
	EtcdClientPort int
	// EtcdPeerPort is the embedded etcd's peer port on 127.0.0.1. Default 12380.
	EtcdPeerPort int
	// VIPCIDR is the range service VIPs come from. Default 240.240.0.0/16.
	VIPCIDR netip.Prefix
	// Heartbeat is how often agents must send a message; a node's instances
	// vanish after 3 missed heartbeats. Default 5s.
	Heartbeat time.Duration
	// RequestTimeout bounds every etcd operation. Default 5s.
	RequestTimeout time.Duration
	// TrustDomain is the SPIFFE trust domain of every identity the CA
	// issues. Default "cluster.local".
	TrustDomain string
	// CertTTL is the lifetime of node and workload certificates (and of the
	// API's serving certificate, renewed at half-life). Default 24h.
	CertTTL time.Duration
	// KEKFile is the key-encryption key that seals the CA's root key in
	// etcd; every replica must have the same one. Created (0600) when
	// absent. Default DataDir/kek. Unused with CACert.
	KEKFile string
	// CACert and CAKey are the paths of an operator's intermediate CA (the
	// certificate followed by its chain up to the root, and its key). Set,
	// no root is generated and nothing of the CA is stored in etcd; every
	// replica must be given the same files.
	CACert, CAKey string
	// Log receives the control plane's logs (and etcd's warnings). Default
	// slog.Default().
	Log *slog.Logger
}

// Defaults of Config.
const (
	DefaultDataDir        = "/var/lib/hms-control"
	DefaultListen         = "127.0.0.1:9090"
	DefaultHTTPAddr       = "127.0.0.1:9091"
	DefaultEtcdClientPort = 12379
	DefaultEtcdPeerPort   = 12380
	DefaultHeartbeat      = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	DefaultTrustDomain    = "cluster.local"
	DefaultCertTTL        = 24 * time.Hour
)

// defaultVIPCIDR is reserved space (240/4) that no real network uses.
var defaultVIPCIDR = netip.MustParsePrefix("240.240.0.0/16")

// withDefaults returns cfg with every zero field set to its default, or an
// error for values that cannot work.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.EtcdClientPort == 0 {
		cfg.EtcdClientPort = DefaultEtcdClientPort
	}
	if cfg.EtcdPeerPort == 0 {
		cfg.EtcdPeerPort = DefaultEtcdPeerPort
	}
	if !cfg.VIPCIDR.IsValid() {
		cfg.VIPCIDR = defaultVIPCIDR
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if cfg.CertTTL == 0 {
		cfg.CertTTL = DefaultCertTTL
	}
	if cfg.KEKFile == "" {
		cfg.KEKFile = filepath.Join(cfg.DataDir, "kek")
	}
	if err := mtls.CheckTrustDomain(cfg.TrustDomain); err != nil {
		return cfg, err
	}
	switch {
	case cfg.CertTTL < time.Minute:
		return cfg, fmt.Errorf("cert ttl %s is too short (at least 1m)", cfg.CertTTL)
	case (cfg.CACert == "") != (cfg.CAKey == ""):
		return cfg, errors.New("ca cert and ca key must be given together")
	}
	switch {
	case cfg.Heartbeat < 0 || cfg.RequestTimeout < 0:
		return cfg, errors.New("heartbeat and request timeout must be positive")
	case cfg.EtcdClientPort == cfg.EtcdPeerPort:
		return cfg, fmt.Errorf("etcd client and peer port are both %d", cfg.EtcdClientPort)
	case cfg.EtcdClientPort == 2379 || cfg.EtcdPeerPort == 2380:
		return cfg, errors.New("embedded etcd must not use the standard ports 2379/2380")
	}
	cfg.VIPCIDR = cfg.VIPCIDR.Masked()
	if hostBits(cfg.VIPCIDR) < 2 {
		return cfg, fmt.Errorf("vip cidr %s is too small", cfg.VIPCIDR)
	}
	return cfg, nil
}

// leaseTTL is the etcd lease TTL of an agent stream: 3 heartbeats, in whole
// seconds (etcd's granularity), at least 1.
func (cfg Config) leaseTTL() int64 {
	ttl := int64((3*cfg.Heartbeat + time.Second - 1) / time.Second)
	return max(ttl, 1)
}
