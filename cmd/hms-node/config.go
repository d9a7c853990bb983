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

	"github.com/hms-node/hms-node/pkg/api"
	"github.com/hms-node/hms-node/pkg/control"
)

// controlFlags adds --config and --control to a verb that talks to the
// control plane.
func controlFlags(cmd *cobra.Command) {
	cmd.Flags().String("config", "", "client config (default $HMS_CONFIG, then ~/.hms/config)")
	cmd.Flags().String("control", "", "control-plane address host:port (overrides the config's)")
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

// dialControl opens an mTLS connection to the control plane with the admin
// credential of the client config.
func dialControl(cmd *cobra.Command) (*grpc.ClientConn, error) {
	path := configPath(cmd)
	cfg, err := control.LoadAdminConfig(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no client config at %s: start the control plane (hms-node control) on this machine, or pass --config with its <data-dir>/admin.yaml", path)
	}
	if err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.TLS()
	if err != nil {
		return nil, err
	}
	addr := cfg.Control
	if a, _ := cmd.Flags().GetString("control"); a != "" {
		addr = a
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512<<20)))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return conn, nil
}

// controlClients are the control plane's APIs over one connection.
type controlClients struct {
	registry api.RegistryClient
	identity api.IdentityClient
}

// dialCall connects to the control plane for one CLI call, bounded by
// rpcTimeout; done closes both.
func dialCall(cmd *cobra.Command) (context.Context, controlClients, func(), error) {
	conn, err := dialControl(cmd)
	if err != nil {
		return nil, controlClients{}, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	done := func() { cancel(); conn.Close() }
	return ctx, controlClients{registry: api.NewRegistryClient(conn), identity: api.NewIdentityClient(conn)}, done, nil
}

// rpcTimeout bounds one CLI call to the control plane.
const rpcTimeout = 15 * time.Second
