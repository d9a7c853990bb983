// Command hms-node is the node agent, the control plane and the CLI of the
// hms-node service mesh.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	root := &cobra.Command{
		Use:           "hms-node",
		Short:         "A sidecar-free service mesh: node agent, control plane and CLI",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(agentCmd(), enrollCmd(), unenrollCmd(), statusCmd(), versionCmd(), devCmd(),
		controlCmd(), applyCmd(), deleteCmd(), listCmd(), addCmd(), tokenCmd(), nodeCmd())
	root.AddCommand(cniCmd())
	root.AddCommand(curlCmd())
	root.AddCommand(doctorCmd(), dashboardCmd())
	root.AddCommand(limitCmd(), routeCmd(), tapCmd(), tailCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "hms-node:", err)
		os.Exit(1)
	}
}
