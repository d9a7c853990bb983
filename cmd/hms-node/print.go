package main

import (
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/agent"
	"github.com/hms-node/hms-node/pkg/agent/metrics"
	"github.com/hms-node/hms-node/pkg/datapath"
)

// statusWidth is the width status output keeps to.
const statusWidth = 80

// printStatus renders status for a person, within 80 columns.
func printStatus(w io.Writer, st agent.Status) {
	accel := "off"
	if st.Datapath.Accel {
		accel = "on" // sk_msg+sockhash in Kernel
	}
	field := func(label, text string) { wrapLine(w, fmt.Sprintf("%-10s", label), text) }
	field("Node", fmt.Sprintf("%s   agent %s, up %s", st.Node, st.Version, time.Duration(st.UptimeSeconds)*time.Second))
	field("Kernel", strings.Join(st.KernelFeatures, " "))
	field("Registry", st.Control)
	field("Datapath", fmt.Sprintf("pinned at %s, acceleration %s", st.Datapath.PinPath, accel))
	if st.Registry != nil {
		field("mTLS", fmt.Sprintf("tunnels accepted %d, denied %d; plaintext refused %d", st.Accepted, st.Denied, st.PlainRefused))
	}
	printDatapath(w, st.Datapath)
	printWorkloads(w, st.Workloads)
	printTraffic(w, st.Circuits, st.TopDestinations)
}

// printDatapath lists the programs and links, then the counters.
func printDatapath(w io.Writer, dp agent.DatapathStatus) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tLINK")
	for _, l := range groupLinks(dp.Attachments) {
		fmt.Fprintf(tw, "%s\t%s\n", l[0], l[1])
	}
	tw.Flush()

	fmt.Fprintln(w, "\nCOUNTERS")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, name := range datapath.CounterNames {
		sep := "\t"
		if i%2 == 1 || i == len(datapath.CounterNames)-1 {
			sep = "\n"
		}
		fmt.Fprintf(tw, "  %s\t%d%s", name, dp.Counters[name], sep)
	}
	tw.Flush()
}

// printWorkloads gives each workload a few lines: address and state,
// ports, netns, identity and certificate.
func printWorkloads(w io.Writer, wls []agent.Workload) {
	fmt.Fprintf(w, "\nWORKLOADS (%d)\n", len(wls))
	for _, wl := range wls {
		state, why, _ := strings.Cut(wl.State, ": ") // "degraded: <why>"
		wrapLine(w, "  ", fmt.Sprintf("%s/%s  %s  %s", wl.Namespace, wl.Service, wl.IP, state))
		if why != "" {
			wrapLine(w, "    why      ", why)
		}
		ports := "none (client only)"
		if len(wl.Ports) > 0 {
			ports = fmt.Sprintf("%v, healthy %v", wl.Ports, wl.Healthy)
		}
		wrapLine(w, "    ports    ", ports)
		wrapLine(w, "    netns    ", wl.Netns)
		if wl.Identity != "" {
			wrapLine(w, "    ", "identity "+wl.Identity)
			wrapLine(w, "    ", "cert     "+certLine(wl))
		}
	}
}

// printTraffic lists the circuits not closed and the top destinations.
func printTraffic(w io.Writer, circuits map[string]string, top []metrics.DestinationRate) {
	fmt.Fprintf(w, "\nCIRCUITS (%d not closed)\n", len(circuits))
	dsts := make([]string, 0, len(circuits))
	for d := range circuits {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	for _, d := range dsts {
		wrapLine(w, "  ", d+"  "+circuits[d])
	}

	fmt.Fprintln(w, "\nTOP DESTINATIONS (last minute)")
	if len(top) == 0 {
		fmt.Fprintln(w, "  none")
		return
	}
	const row = "  %-36s %9v %7v %6v %6v\n" // 70 columns
	fmt.Fprintf(w, row, "SERVICE", "REQUESTS", "REQ/S", "5XX", "ERR%")
	for _, d := range top {
		name := d.Service
		if len(name) > 36 { // on a line of its own, the numbers below
			fmt.Fprintf(w, "  %s\n", name)
			name = ""
		}
		errPct := fmt.Sprintf("%.1f%%", 100*float64(d.Errors)/float64(max(d.Requests, 1)))
		fmt.Fprintf(w, row, name, d.Requests, fmt.Sprintf("%.2f", d.RequestRate), d.Errors, errPct)
	}
}

// certLine is a workload certificate's expiry, time left and health.
func certLine(wl agent.Workload) string {
	exp, err := time.Parse(time.RFC3339, wl.CertExpiry)
	if err != nil {
		return wl.CertExpiry // "pending"
	}
	return fmt.Sprintf("expires %s (in %s), %s", wl.CertExpiry, time.Until(exp).Round(time.Second), wl.CertHealth)
}

// groupLinks lists the links as (program, link) rows; per-pod links
// (link_sklookup_<cookie>) share one row with their count.
func groupLinks(atts []datapath.Attachment) [][2]string {
	var rows [][2]string
	count := map[[2]string]int{}
	for _, a := range atts {
		pin := filepath.Base(a.Pin)
		if i := strings.LastIndexByte(pin, '_'); i > 0 && strings.Trim(pin[i+1:], "0123456789") == "" && i < len(pin)-1 {
			pin = pin[:i+1] + "*"
		}
		k := [2]string{a.Program, pin}
		if count[k] == 0 {
			rows = append(rows, k)
		}
		count[k]++
	}
	for i, k := range rows {
		if n := count[k]; n > 1 {
			rows[i][1] = fmt.Sprintf("%s (%d)", k[1], n)
		}
	}
	return rows
}

// wrapLine writes prefix+text wrapped at statusWidth, continuation lines
// indented like the text. Runs of spaces inside a line are kept (they
// separate columns); a word longer than a line is cut.
func wrapLine(w io.Writer, prefix, text string) {
	indent := strings.Repeat(" ", len(prefix))
	room := statusWidth - len(prefix)
	line := ""
	flush := func() {
		fmt.Fprintln(w, prefix+strings.TrimRight(line, " "))
		prefix, line = indent, ""
	}
	for i, word := range strings.Split(text, " ") {
		switch {
		case i == 0:
			line = word
		case line == "" && prefix == indent: // a wrapped line starts at a word
			line = word
		case len(line)+1+len(word) <= room:
			line += " " + word
		default:
			flush()
			line = word
		}
		for len(line) > room {
			rest := line[room:]
			line = line[:room]
			flush()
			line = rest
		}
	}
	flush()
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
