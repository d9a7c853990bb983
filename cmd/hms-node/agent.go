package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/agent"
	"github.com/hms-node/hms-node/pkg/agent/kube"
	"github.com/hms-node/hms-node/pkg/datapath"
)

func agentCmd() *cobra.Command {
	var (
		cfg     agent.Config
		dpc     datapath.Config
		accel   bool
		scut    bool
		cleanup bool
		useKube bool
		kubecfg string
		linger  bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: eBPF datapath, shared proxy, local API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			dpc.NoAccel, dpc.NoShortcut, dpc.Log = !accel, !scut, log
			if cleanup {
				if err := datapath.Cleanup(dpc.BPFFS); err != nil {
					return fmt.Errorf("cleanup %s: %w", dpc.BPFFS, err)
				}
				fmt.Printf("removed everything pinned under %s\n", dpc.BPFFS)
				return nil
			}
			if cfg.Node == "" {
				cfg.Node, _ = os.Hostname()
			}
			var err error
			cfg.Log, cfg.Version = log, version
			if useKube || kubecfg != "" {
				if cfg.Kube, err = kube.NewClient(kubecfg); err != nil {
					return err
				}
			}
			dpc.VIPRange = cfg.VIPRange
			dp, err := datapath.Open(dpc)
			if err != nil {
				return err
			}
			defer dp.Close()
			a, err := agent.New(cfg, dp)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			if err := a.Run(ctx); err != nil || ctx.Err() != nil || !linger {
				return err
			}
			// Handed over: exiting now would make the kubelet restart us,
			// and the restarted agent would take the node back.
			log.Info("handed over; idle until stopped")
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Node, "node", os.Getenv("NODE_NAME"), "node name (default $NODE_NAME, then the host name)")
	f.StringVar(&dpc.CgroupRoot, "cgroup-root", "", "cgroup v2 directory whose processes are steered (default: the host's cgroup2 mount)")
	f.StringVar(&dpc.BPFFS, "bpffs", datapath.DefaultBPFFS, "pin directory inside a bpffs")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/hms", "directory for persisted enrollments")
	f.StringVar(&cfg.Socket, "socket", "/var/run/hms/agent.sock", "local API unix socket")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "127.0.0.1:15020", `address of /metrics, /healthz, /readyz ("off" to disable)`)
	f.Var(prefixValue{&cfg.VIPRange}, "vip-cidr", "the mesh's VIP range, blackholed in pods and refused when unknown (default 240.240.0.0/16)")
	f.BoolVar(&accel, "accel", true, "short-circuit app<->proxy loopback hops with sockhash/sk_msg")
	f.BoolVar(&scut, "l4-shortcut", true, "move same-node L4 connections between two pods into the kernel once relayed up to date (needs --accel)")
	f.BoolVar(&cleanup, "cleanup", false, "remove everything pinned under --bpffs and exit")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", 0, "how long a replaced agent waits for its connections (default 30s)")
	f.StringVar(&cfg.Control, "control", "", "control-plane address host:port (empty: standalone, no registry)")
	f.StringVar(&cfg.TokenFile, "token-file", "", "join token for the first start (hms-node token create)")
	f.StringSliceVar(&cfg.DNSUpstreams, "dns-upstream", nil, "resolvers for names outside the mesh, ip:port (default: the node's resolv.conf)")
	f.DurationVar(&cfg.ProbeInterval, "probe-interval", 0, "health-check interval of services that set none (default 10s)")
	f.Var(addrValue{&cfg.HostIP}, "host-ip", "address dev-mode workloads are registered at (default 127.0.0.1: this node only)")
	f.BoolVar(&linger, "linger-after-handover", false, "after handing over to a successor, stay idle until signalled instead of exiting (DaemonSets: no restart)")
	f.BoolVar(&useKube, "kube", false, "pod and namespace labels decide membership (in-cluster service account; see docs/kubernetes.md)")
	f.StringVar(&kubecfg, "kubeconfig", "", "kubeconfig for --kube instead of the in-cluster service account")
	f.StringVar(&cfg.NetnsDir, "netns-dir", "/var/run/netns", "where the runtime keeps pod network namespaces (pods that predate the agent are found there)")
	f.StringVar(&cfg.ExternalCA, "external-ca", "", "PEM bundle to verify external https services against (default: system roots)")
	return cmd
}

// prefixValue is a pflag.Value for a netip.Prefix.
type prefixValue struct{ p *netip.Prefix }

func (v prefixValue) String() string {
	if v.p == nil || !v.p.IsValid() {
		return ""
	}
	return v.p.String()
}

func (v prefixValue) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("want an IPv4 CIDR such as 240.240.0.0/16")
	}
	*v.p = p.Masked()
	return nil
}

func (prefixValue) Type() string { return "cidr" }

// addrValue is a pflag.Value for a netip.Addr.
type addrValue struct{ a *netip.Addr }

func (v addrValue) String() string {
	if v.a == nil || !v.a.IsValid() {
		return ""
	}
	return v.a.String()
}

func (v addrValue) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	*v.a = a
	return nil
}

func (addrValue) Type() string { return "ip" }
