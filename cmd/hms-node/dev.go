package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/agent"
)

func devCmd() *cobra.Command {
	var req agent.DevRequest
	var port uint
	cmd := &cobra.Command{
		Use:   "dev --service SVC --port N -- CMD [ARGS...]",
		Short: "Run a host process as an enrolled workload (registered, probed, in the mesh)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if port == 0 || port > 65535 {
				return fmt.Errorf("--port %d: not a TCP port", port)
			}
			req.Port = uint16(port)
			sock := *socket(cmd)
			var w agent.DevWorkload
			if err := callAgent(sock, "POST", "/v1/dev", req, &w); err != nil {
				return err
			}
			code, err := runInCgroup(w.Cgroup, args)
			// The agent also notices the empty cgroup; this just is faster.
			callAgent(sock, "POST", "/v1/dev/remove", w, nil)
			if err != nil {
				return err
			}
			os.Exit(code)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Service, "service", "", "service the process is an instance of")
	f.StringVar(&req.Namespace, "namespace", "default", "namespace of the service")
	f.UintVar(&port, "port", 0, "port the process serves on the host")
	socketFlag(cmd)
	cmd.MarkFlagRequired("service")
	cmd.MarkFlagRequired("port")
	return cmd
}

// runInCgroup runs args with the process placed in the cgroup from its
// first instruction, forwarding SIGINT/SIGTERM, and returns its exit code.
func runInCgroup(dir string, args []string) (int, error) {
	cg, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("dev cgroup: %w", err)
	}
	defer cg.Close()
	c := exec.Command(args[0], args[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	if err := c.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", args[0], err)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			c.Process.Signal(s)
		}
	}()
	err = c.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	return 0, err
}
