package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"gopkg.in/yaml.v3"

	"github.com/hms-node/hms-node/pkg/api"
)

// adminConfig is the CLI's client config, as `control` writes it to
// <data-dir>/admin.yaml.
type adminConfig struct {
	Control string `yaml:"control"`
}

// controlFlags adds --config and --control to a verb that talks to the
// control plane.
func controlFlags(cmd *cobra.Command) {
	cmd.Flags().String("config", "", "client config (default $HMS_CONFIG, then ~/.hms/config)")
	cmd.Flags().String("control", "", "control-plane address host:port (overrides the config)")
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

// controlAddr resolves the control-plane address of a CLI verb.
func controlAddr(cmd *cobra.Command) (string, error) {
	if a, _ := cmd.Flags().GetString("control"); a != "" {
		return a, nil
	}
	path := configPath(cmd)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("no client config at %s: start the control plane (hms-node control), or pass --config or --control", path)
	}
	if err != nil {
		return "", fmt.Errorf("read client config: %w", err)
	}
	var c adminConfig
	if err := yaml.Unmarshal(data, &c); err != nil || c.Control == "" {
		return "", fmt.Errorf("client config %s: no control address (%v)", path, err)
	}
	return c.Control, nil
}

// registry dials the control plane's Registry API.
func registry(cmd *cobra.Command) (api.RegistryClient, func(), error) {
	addr, err := controlAddr(cmd)
	if err != nil {
		return nil, nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return api.NewRegistryClient(conn), func() { conn.Close() }, nil
}

// rpcTimeout bounds one CLI call to the control plane.
const rpcTimeout = 15 * time.Second
