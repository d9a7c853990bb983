package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/control"
)

func dashboardCmd() *cobra.Command {
	var httpAddr string
	var noOpen bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Print the address of the control plane's web dashboard and open it in a browser",
		Long: `Print the address of the web dashboard that the control plane serves on its
HTTP listener (--http-addr of hms-node control, default 127.0.0.1:9091), after
checking that it answers, and open it with xdg-open when a display is there.

Without --http-addr the dashboard is looked for on the control plane's host
(--control, else the client config's) on port 9091.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr := httpAddr
			if addr == "" {
				addr = defaultControlHTTP(cmd)
			}
			url := "http://" + addr + "/dashboard/"
			if err := checkDashboard(url); err != nil {
				return fmt.Errorf("dashboard at %s: %w; start the control plane (hms-node control --http-addr HOST:PORT), or pass --http-addr HOST:PORT of its HTTP listener", url, err)
			}
			fmt.Println(url)
			if noOpen || !hasDisplay() {
				return nil
			}
			if err := openBrowser(url); err != nil {
				fmt.Fprintf(os.Stderr, "hms-node: could not open a browser (%v); open %s yourself\n", err, url)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&httpAddr, "http-addr", "", "the control plane's HTTP listener host:port (default: its host, port 9091)")
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "only print the address")
	controlFlags(cmd)
	return cmd
}

// defaultControlHTTP is the control plane's host (from --control or the
// client config) on port 9091, or the control plane's default listener.
func defaultControlHTTP(cmd *cobra.Command) string {
	api := controlOverride(cmd)
	if api == "" {
		if cfg, err := control.LoadAdminConfig(configPath(cmd)); err == nil {
			api = cfg.Control
		}
	}
	host, _, err := net.SplitHostPort(api)
	if err != nil {
		return control.DefaultHTTPAddr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, "9091")
}

// checkDashboard reads the dashboard's overview once: the address is
// printed only when a dashboard answers there.
func checkDashboard(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url+"api/overview", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	var uerr *neturl.Error
	if errors.As(err, &uerr) {
		return uerr.Err // the caller names the URL
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answered %s (a control plane older than the dashboard, or another server?)", resp.Status)
	}
	var o struct {
		Services []json.RawMessage `json:"services"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || o.Services == nil {
		return fmt.Errorf("answered something that is not the dashboard (%v)", err)
	}
	return nil
}

// hasDisplay says whether a graphical session is there to open a browser
// in.
func hasDisplay() bool {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return false
	}
	_, err := exec.LookPath("xdg-open")
	return err == nil
}

// openBrowser hands url to xdg-open and does not wait for the browser.
func openBrowser(url string) error {
	c := exec.Command("xdg-open", url)
	if err := c.Start(); err != nil {
		return err
	}
	go c.Wait() // reap it; the CLI exits right after anyway
	return nil
}
