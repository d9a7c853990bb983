package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/cni"
)

// The runtime runs the plugin as <CNI bin dir>/hms-cni with no arguments;
// that copy of this binary is the `cni` verb.
func init() {
	if filepath.Base(os.Args[0]) == cni.PluginType {
		os.Args = append([]string{os.Args[0], "cni"}, os.Args[1:]...)
	}
}

func cniCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cni",
		Short: "The chained CNI plugin (installed as hms-cni); install/uninstall it on a node",
		Long: "Run by the container runtime (CNI_COMMAND in the environment), it tells the local agent\n" +
			"about each pod sandbox on ADD, DEL and CHECK. `cni install` / `cni uninstall` add it to and\n" +
			"remove it from the node's CNI configuration.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Getenv("CNI_COMMAND") == "" {
				return cmd.Help()
			}
			cni.Main("hms-cni " + version + " (hms-node chained CNI plugin)")
			return nil
		},
	}
	cmd.AddCommand(cniInstallCmd(), cniUninstallCmd())
	return cmd
}

func cniInstallCmd() *cobra.Command {
	var in cni.Install
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Copy this binary into the CNI bin dir as hms-cni and chain it into the node's conflist",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := in.Run()
			if err != nil {
				return err
			}
			mode := "fail-open"
			if in.Entry.FailClosed {
				mode = "fail-closed"
			}
			fmt.Printf("✓ %s installed in %s and chained into %s (%s)\n", cni.PluginType, in.BinDir, path, mode)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.BinDir, "bin-dir", "/opt/cni/bin", "the node's CNI bin dir")
	f.StringVar(&in.ConfDir, "conf-dir", "/etc/cni/net.d", "the node's CNI conf dir")
	f.StringVar(&in.Entry.Socket, "socket", "/var/run/hms/agent.sock", "the agent's socket, as seen by the runtime on the node")
	f.BoolVar(&in.Entry.FailClosed, "fail-closed", false, "fail pod creation when the agent cannot take the pod")
	f.StringVar(&in.Entry.Timeout, "timeout", "10s", "bound of each call to the agent")
	f.StringVar(&in.Entry.LogFile, "log-file", "", "file (on the node) the plugin logs failures to")
	return cmd
}

func cniUninstallCmd() *cobra.Command {
	var binDir, confDir string
	var remove []string
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove hms-cni from every conflist of the conf dir and from the bin dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cni.Uninstall(binDir, confDir); err != nil {
				return err
			}
			fmt.Printf("✓ %s removed from %s and %s\n", cni.PluginType, confDir, binDir)
			for _, d := range remove {
				if err := os.RemoveAll(d); err != nil {
					return err
				}
				fmt.Printf("✓ removed %s\n", d)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&remove, "remove-dir", nil, "also remove these directories (the agent's state and socket dirs; repeatable)")
	cmd.Flags().StringVar(&binDir, "bin-dir", "/opt/cni/bin", "the node's CNI bin dir")
	cmd.Flags().StringVar(&confDir, "conf-dir", "/etc/cni/net.d", "the node's CNI conf dir")
	return cmd
}
