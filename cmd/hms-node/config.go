package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/hms-node/hms-node/pkg/api"
	"github.com/hms-node/hms-node/pkg/control"
)

// controlFlags adds --config and --control to a verb that talks to the
// control plane.
func controlFlags(cmd *cobra.Command) {
	cmd.Flags().String("config", "", "client config (default $HMS_CONFIG, then ~/.hms/config)")
	cmd.Flags().String("control", "", "control-plane address host:port (default $HMS_CONTROL, then the config's)")
}

// configPath finds the client config: --config, $HMS_CONFIG, ~/.hms/config.
func configPath(cmd *cobra.Command) string {
	if p, _ := cmd.Flags().GetString("config"); p != "" {
		return p
	}
	if p := os.Getenv("HMS_CONFIG"); p != "" {
		return p
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".hms", "config")
}

// controlOverride is the control-plane address given on the command
// line (--control) or in $HMS_CONTROL, or "" to use the client config's.
func controlOverride(cmd *cobra.Command) string {
	if a, _ := cmd.Flags().GetString("control"); a != "" {
		return a
	}
	return os.Getenv("HMS_CONTROL")
}

// Keepalive of the CLI's control connection: a --follow stream (tap, tail)
// notices a control plane that vanished without closing the connection
// (host down, network cut) within about controlPing+controlPingTimeout.
// The control plane permits pings every 5s.
var (
	controlPing        = 15 * time.Second
	controlPingTimeout = 10 * time.Second // a var for tests
)

// dialControl opens an mTLS connection to the control plane with the admin
// credential of the client config. The target names the far end in error
// messages (see rpcError).
func dialControl(cmd *cobra.Command) (*grpc.ClientConn, target, error) {
	path := configPath(cmd)
	to := target{config: path, addr: controlOverride(cmd)}
	cfg, err := control.LoadAdminConfig(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, to, fmt.Errorf("no client config at %s: start the control plane (hms-node control) on this machine, or pass --config (or HMS_CONFIG) with its <data-dir>/admin.yaml", path)
	}
	if err != nil {
		return nil, to, err
	}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		return nil, to, fmt.Errorf("%s: %w", path, err)
	}
	if to.addr == "" {
		to.addr = cfg.Control
	}
	conn, err := grpc.NewClient(to.addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: controlPing, Timeout: controlPingTimeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512<<20)))
	if err != nil {
		return nil, to, fmt.Errorf("control plane address %q: %w — check --control / HMS_CONTROL or the control address in %s", to.addr, err, path)
	}
	return conn, to, nil
}

// controlClients are the control plane's APIs over one connection.
type controlClients struct {
	registry api.RegistryClient
	identity api.IdentityClient
	to       target // for rpcError
}

// dialCall connects to the control plane for one CLI call, bounded by
// rpcTimeout; done closes both.
func dialCall(cmd *cobra.Command) (context.Context, controlClients, func(), error) {
	return dialCallTimeout(cmd, rpcTimeout)
}

// dialCallTimeout is dialCall bounded by d.
func dialCallTimeout(cmd *cobra.Command, d time.Duration) (context.Context, controlClients, func(), error) {
	conn, to, err := dialControl(cmd)
	if err != nil {
		return nil, controlClients{}, nil, err
	}
	to.timeout = d
	ctx, cancel := context.WithTimeout(context.Background(), d)
	done := func() { cancel(); conn.Close() }
	return ctx, controlClients{registry: api.NewRegistryClient(conn), identity: api.NewIdentityClient(conn), to: to}, done, nil
}

// rpcTimeout bounds one CLI call to the control plane, connecting
// included. A var for tests.
var rpcTimeout = 15 * time.Second
