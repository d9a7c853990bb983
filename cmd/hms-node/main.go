// Command hms-node is the node agent, the control plane and the CLI of the
// hms-node service mesh.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// Exit statuses: a verb that ran and failed, or a command line that is
// wrong (then the usage of the verb is printed too).
const (
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "hms-node",
		Short: "A sidecar-free service mesh: node agent, control plane and CLI",
		// run prints errors, and usage only for command-line mistakes.
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(agentCmd(), enrollCmd(), unenrollCmd(), statusCmd(), versionCmd(), devCmd(),
		controlCmd(), applyCmd(), deleteCmd(), listCmd(), addCmd(), tokenCmd(), nodeCmd())
	root.AddCommand(cniCmd())
	root.AddCommand(curlCmd())
	root.AddCommand(doctorCmd(), dashboardCmd())
	root.AddCommand(limitCmd(), routeCmd(), tapCmd(), tailCmd())
	return root
}

// run runs the command line args and returns the exit status. A failure
// is one line on stderr, "hms-node: <what failed and what to do>"; when
// the command line itself is wrong (unknown flag or verb, missing
// argument or required flag), the verb's usage comes first.
func run(args []string, stderr io.Writer) int {
	root := rootCmd()
	root.SetArgs(args)
	root.SetErr(stderr)
	ran := false
	markRuns(root, &ran)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	if !ran {
		fmt.Fprint(stderr, cmd.UsageString())
		fmt.Fprintln(stderr, "hms-node:", err)
		return exitUsage
	}
	fmt.Fprintln(stderr, "hms-node:", err)
	return exitFailed
}

// markRuns wraps the RunE of c and its children to set *ran once a verb
// starts running: an error before that is the command line's.
func markRuns(c *cobra.Command, ran *bool) {
	if f := c.RunE; f != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			*ran = true
			return f(cmd, args)
		}
	}
	for _, sub := range c.Commands() {
		markRuns(sub, ran)
	}
}
