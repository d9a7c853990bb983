package main

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/agent"
	"github.com/hms-node/hms-node/pkg/datapath"
)

// printStatus renders status for a person, within 80 columns.
func printStatus(w io.Writer, st agent.Status) {
	accel := "off"
	if st.Datapath.Accel {
		accel = "on (sockhash + sk_msg)"
	}
	fmt.Fprintf(w, "Node      %s   agent %s, up %s\n", st.Node, st.Version, time.Duration(st.UptimeSeconds)*time.Second)
	fmt.Fprintf(w, "Registry  %s\n", st.Control)
	fmt.Fprintf(w, "Datapath  pinned at %s, acceleration %s\n\n", st.Datapath.PinPath, accel)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tLINK")
	for _, a := range st.Datapath.Attachments {
		fmt.Fprintf(tw, "%s\t%s\n", a.Program, filepath.Base(a.Pin))
	}
	tw.Flush()

	fmt.Fprintln(w, "\nCOUNTERS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, name := range datapath.CounterNames {
		sep := "\t"
		if i%2 == 1 {
			sep = "\n"
		}
		fmt.Fprintf(tw, "  %s\t%d%s", name, st.Datapath.Counters[name], sep)
	}
	tw.Flush()

	if st.Registry != nil {
		fmt.Fprintf(w, "\nmTLS      tunnels accepted %d, denied %d; plaintext refused %d\n", st.Accepted, st.Denied, st.PlainRefused)
	}
	fmt.Fprintf(w, "\nWORKLOADS (%d)\n", len(st.Workloads))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tIP\tPORTS\tSTATE\tNETNS")
	for _, wl := range st.Workloads {
		fmt.Fprintf(tw, "%s/%s\t%s\t%v\t%s\t%s\n", wl.Namespace, wl.Service, wl.IP, wl.Ports, wl.State, filepath.Base(wl.Netns))
		if wl.Identity != "" {
			fmt.Fprintf(tw, "  %s\tcert expires %s\t\t\t\n", wl.Identity, wl.CertExpiry)
		}
	}
	tw.Flush()
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and the kernel features the datapath uses",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Printf("hms-node %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			fmt.Println("datapath: cgroup connect4/6, sendmsg/recvmsg4/6, getpeername4/6, sockops, sk_msg+sockhash, sk_lookup")
		},
	}
}
