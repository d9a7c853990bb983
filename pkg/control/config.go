package control

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
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
