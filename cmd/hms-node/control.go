package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/control"
)

func controlCmd() *cobra.Command {
	var (
		cfg     control.Config
		vipCIDR string
	)
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane: registry on etcd, VIPs, the agents' API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := netip.ParsePrefix(vipCIDR)
			if err != nil || !p.Addr().Is4() {
				return fmt.Errorf("--vip-cidr %q: want an IPv4 CIDR such as 240.240.0.0/16", vipCIDR)
			}
			cfg.VIPCIDR = p.Masked()
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			s, err := control.New(cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			go func() {
				select {
				case <-s.Ready():
					writeDefaultClientConfig(cfg.DataDir)
				case <-ctx.Done():
				}
			}()
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/hms-control", "embedded etcd data and admin.yaml")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:9090", "gRPC API address")
	f.StringVar(&cfg.HTTPAddr, "http-addr", "127.0.0.1:9091", `health and metrics address ("off" to disable)`)
	f.StringSliceVar(&cfg.EtcdEndpoints, "etcd-endpoints", nil, "use this etcd cluster instead of the embedded one (a,b,c)")
	f.IntVar(&cfg.EtcdClientPort, "etcd-client-port", 12379, "embedded etcd client port (loopback)")
	f.IntVar(&cfg.EtcdPeerPort, "etcd-peer-port", 12380, "embedded etcd peer port (loopback)")
	f.StringVar(&vipCIDR, "vip-cidr", "240.240.0.0/16", "range service VIPs are allocated from")
	f.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "trust domain of the mesh's SPIFFE IDs")
	f.DurationVar(&cfg.CertTTL, "cert-ttl", 24*time.Hour, "lifetime of workload and node certificates (rotated at half-life)")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "key-encryption key of the CA's root key in etcd (default <data-dir>/kek; the same file on every replica)")
	f.StringVar(&cfg.CACert, "ca-cert", "", "an operator's intermediate CA certificate (with its chain to the root) instead of a generated root")
	f.StringVar(&cfg.CAKey, "ca-key", "", "the key of --ca-cert")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 0, "agents' heartbeat interval; instances vanish after 3 missed (default 5s)")
	return cmd
}

// writeDefaultClientConfig copies admin.yaml to ~/.hms/config when the
// user has none yet, so CLI verbs work with no flags on this machine.
func writeDefaultClientConfig(dataDir string) {
	home, err := os.UserHomeDir()
	if err != nil {
		return
	}
	dst := filepath.Join(home, ".hms", "config")
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		return
	}
	data, err := os.ReadFile(filepath.Join(dataDir, "admin.yaml"))
	if err != nil {
		return
	}
	os.MkdirAll(filepath.Dir(dst), 0o700)
	os.WriteFile(dst, data, 0o600)
}
