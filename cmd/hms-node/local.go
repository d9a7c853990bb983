package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/agent"
	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

func socketFlag(cmd *cobra.Command) *string {
	return cmd.Flags().String("socket", "/var/run/hms/agent.sock", "the local agent's unix socket")
}

// agentTimeout bounds one CLI call to the local agent.
const agentTimeout = 30 * time.Second

// callAgent makes one call to the local agent's API. Its error says what
// failed and what to do (see explain).
func callAgent(socket, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), agentTimeout)
	defer cancel()
	if err := localapi.NewClient(socket).Do(ctx, method, path, in, out); err != nil {
		return &callError{to: target{agent: true, addr: socket, timeout: agentTimeout}, err: err}
	}
	return nil
}

func enrollCmd() *cobra.Command {
	var req agent.EnrollRequest
	var ports []uint
	cmd := &cobra.Command{
		Use:   "enroll --netns PATH --service SVC [--namespace NS] [--port N]...",
		Short: "Put a pod (a network namespace) into the mesh via the local agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, p := range ports {
				if p == 0 || p > 65535 {
					return fmt.Errorf("--port %d: not a TCP port", p)
				}
				req.Ports = append(req.Ports, uint16(p))
			}
			if abs, err := filepath.Abs(req.Netns); err == nil {
				req.Netns = abs
			}
			var w agent.Workload
			if err := callAgent(*socket(cmd), "POST", "/v1/enroll", req, &w); err != nil {
				return err
			}
			fmt.Printf("✓ %s enrolled as %s/%s (ports %v)\n", w.Netns, w.Namespace, w.Service, w.Ports)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Netns, "netns", "", "path of the pod's network namespace (e.g. /run/netns/NAME)")
	f.StringVar(&req.Service, "service", "", "service the pod is an instance of")
	f.StringVar(&req.Namespace, "namespace", "default", "namespace of the service")
	f.UintSliceVar(&ports, "port", nil, "service port the pod serves (repeatable)")
	socketFlag(cmd)
	cmd.MarkFlagRequired("netns")
	cmd.MarkFlagRequired("service")
	return cmd
}

func socket(cmd *cobra.Command) *string {
	s, _ := cmd.Flags().GetString("socket")
	return &s
}

func unenrollCmd() *cobra.Command {
	var netnsPath string
	cmd := &cobra.Command{
		Use:   "unenroll --netns PATH",
		Short: "Take a pod out of the mesh via the local agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if abs, err := filepath.Abs(netnsPath); err == nil {
				netnsPath = abs
			}
			if err := callAgent(*socket(cmd), "POST", "/v1/unenroll", agent.UnenrollRequest{Netns: netnsPath}, nil); err != nil {
				return err
			}
			fmt.Printf("✓ %s unenrolled\n", netnsPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&netnsPath, "netns", "", "path of the pod's network namespace")
	cmd.MarkFlagRequired("netns")
	socketFlag(cmd)
	return cmd
}

func statusCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the local agent: programs, links, counters, workloads",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st agent.Status
			if err := callAgent(*socket(cmd), "GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			case "", "text":
				printStatus(os.Stdout, st)
				return nil
			default:
				return fmt.Errorf("-o %s: want json or text", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: text or json")
	socketFlag(cmd)
	return cmd
}
