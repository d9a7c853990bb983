package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/control"
	"github.com/hms-node/hms-node/pkg/doctor"
)

func doctorCmd() *cobra.Command {
	var cfg doctor.Config
	var output string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node: kernel, mounts, privileges, agent, pins, control plane (exit 1 if any check fails)",
		Long: `Check this node before and after installing the agent. Each check prints one
line, OK or FAIL, and a failed one says the fix to apply. Exit status 0 when
every check passes, 1 when any fails.

The control plane is found through --control, else $HMS_CONTROL, else the client config
(--config, $HMS_CONFIG, ~/.hms/config), else the running agent's own
connection; its clock is read from its HTTP listener (--http-addr, default
the control-plane host on port 9091).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "text" && output != "json" {
				return fmt.Errorf("-o %s: want text or json", output)
			}
			doctorControl(cmd, &cfg)
			cfg.Socket = *socket(cmd)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			results := doctor.Run(ctx, cfg)
			var err error
			if output == "json" {
				err = doctor.WriteJSON(os.Stdout, results)
			} else {
				err = doctor.WriteText(os.Stdout, results)
			}
			if err != nil {
				return fmt.Errorf("write the report: %w", err)
			}
			if failed := doctor.Failed(results); len(failed) > 0 {
				return fmt.Errorf("%d of %d checks failed (%s): apply each FAIL line's fix, then run hms-node doctor again",
					len(failed), len(results), strings.Join(failed, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.BPFFS, "bpffs", doctor.DefaultBPFFS, "the agent's pin directory (its --bpffs)")
	f.StringVar(&cfg.CgroupRoot, "cgroup-root", "", "the agent's --cgroup-root, if it has one")
	f.StringVar(&cfg.ControlHTTP, "http-addr", "", "the control plane's HTTP listener host:port (default: its host, port 9091)")
	f.DurationVar(&cfg.MaxSkew, "max-skew", doctor.DefaultMaxSkew, "largest clock difference with the control plane that passes")
	f.DurationVar(&cfg.Timeout, "timeout", doctor.DefaultTimeout, "bound of each network check")
	f.StringVarP(&output, "output", "o", "", "output format: text or json")
	controlFlags(cmd)
	socketFlag(cmd)
	return cmd
}

// doctorControl fills the control-plane part of cfg from --control and
// the client config. A missing config is no error here: on a worker node
// there is none, and doctor then asks the running agent for the address.
func doctorControl(cmd *cobra.Command, cfg *doctor.Config) {
	cfg.Control = controlOverride(cmd)
	path := configPath(cmd)
	admin, err := control.LoadAdminConfig(path)
	if errors.Is(err, os.ErrNotExist) {
		cfg.ControlConfigError = fmt.Errorf("no client config at %s", path)
		return
	}
	if err != nil {
		cfg.ControlConfigError = err
		return
	}
	if cfg.Control == "" {
		cfg.Control = admin.Control
	}
	tlsCfg, err := admin.TLS()
	if err != nil {
		cfg.ControlConfigError = fmt.Errorf("client config %s: %w", path, err)
		return
	}
	cfg.ControlTLS = tlsCfg
}
