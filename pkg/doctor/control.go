package doctor

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

const controlFix = "start the control plane (hms-node control), or pass --control HOST:PORT of a running one"

// checkControl calls the control plane's API: with the admin credential a
// List (the API answers and accepts us), without one a TLS handshake that
// shows a server holding the control plane's identity listens there.
func checkControl(ctx context.Context, cfg Config, addr string) Result {
	const name = "control plane"
	if addr == "" {
		detail := "no address: no --control, no client config, and no running agent to ask"
		if cfg.ControlConfigError != nil {
			detail = cfg.ControlConfigError.Error() + "; no running agent to ask either"
		}
		return fail(name, detail, "pass --config <data-dir>/admin.yaml or --control HOST:PORT")
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	if cfg.ControlTLS == nil {
		if err := handshake(ctx, addr); err != nil {
			return fail(name, fmt.Sprintf("%s: %v", addr, err), controlFix)
		}
		why := "no client config"
		if cfg.ControlConfigError != nil {
			why = cfg.ControlConfigError.Error()
		}
		return pass(name, fmt.Sprintf("%s answers TLS as the control plane in %s (not authenticated: %s)",
			addr, time.Since(start).Round(time.Millisecond), why))
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg.ControlTLS)))
	if err != nil {
		return fail(name, fmt.Sprintf("%s: %v", addr, err), controlFix)
	}
	defer conn.Close()
	resp, err := api.NewRegistryClient(conn).List(ctx, &api.ListRequest{})
	if err != nil {
		msg := err.Error()
		if s, ok := status.FromError(err); ok {
			msg = s.Message()
		}
		return fail(name, fmt.Sprintf("%s: %s", addr, msg), controlFix)
	}
	return pass(name, fmt.Sprintf("%s answers in %s (%d services, %d nodes, revision %d)", addr,
		time.Since(start).Round(time.Millisecond), len(resp.GetServices()), len(resp.GetNodes()), resp.GetRevision()))
}

// handshake dials addr and completes TLS 1.3 with a server whose
// certificate names the control plane. The chain is not verified: without
// the client config there is no bundle to verify it with.
func handshake(ctx context.Context, addr string) error {
	d := &tls.Dialer{Config: &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // no bundle; VerifyConnection checks the identity
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := mtls.VerifyControlPlane(cs); err != nil {
				return fmt.Errorf("the server there is not the control plane: %w", err)
			}
			return nil
		},
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// controlHTTP is where the control plane's HTTP listener is: the given
// address, else the API host on port 9091.
func controlHTTP(cfg Config, api string) string {
	if cfg.ControlHTTP != "" {
		return cfg.ControlHTTP
	}
	if host, _, err := net.SplitHostPort(api); err == nil {
		return net.JoinHostPort(host, DefaultHTTPPort)
	}
	return ""
}

// checkClock compares the local clock with the Date header of the control
// plane's /healthz. Date has whole seconds, so the server's time lies in
// [Date, Date+1s) while ours lies in [sent, received]: the check fails
// only when every time in those ranges is skewed beyond MaxSkew.
// Certificates are issued by the control plane's clock: a node far off
// refuses fresh certificates or trusts expired ones.
func checkClock(ctx context.Context, cfg Config, api string) Result {
	const name = "clock skew"
	addr := controlHTTP(cfg, api)
	if addr == "" {
		return fail(name, "no control-plane address to compare the clock with", "pass --http-addr HOST:PORT of the control plane's HTTP listener (--http-addr of hms-node control)")
	}
	url := "http://" + addr + "/healthz"
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return fail(name, err.Error(), "pass --http-addr HOST:PORT")
	}
	sent := cfg.Now()
	resp, err := httpClient(cfg.Timeout).Do(req)
	received := cfg.Now()
	if err != nil {
		return fail(name, fmt.Sprintf("cannot read the control plane's clock: %v", err),
			"start the control plane, or pass --http-addr HOST:PORT of its HTTP listener (--http-addr of hms-node control)")
	}
	resp.Body.Close()
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return fail(name, fmt.Sprintf("%s answered %s without a usable Date header", url, resp.Status),
			"check that --http-addr names the control plane's HTTP listener")
	}
	lo := date.Sub(received)              // the least the server can be ahead
	hi := date.Add(time.Second).Sub(sent) // the most it can be ahead
	est := date.Add(time.Second / 2).Sub(sent.Add(received.Sub(sent) / 2)).Round(10 * time.Millisecond)
	switch {
	case lo > cfg.MaxSkew:
		return fail(name, fmt.Sprintf("the control plane at %s is %s ahead of this node (more than %s)", addr, est, cfg.MaxSkew), syncFix)
	case hi < -cfg.MaxSkew:
		return fail(name, fmt.Sprintf("the control plane at %s is %s behind this node (more than %s)", addr, -est, cfg.MaxSkew), syncFix)
	}
	return pass(name, fmt.Sprintf("within %s of the control plane at %s (offset about %s; its Date header has whole seconds)", cfg.MaxSkew, addr, est))
}

const syncFix = "synchronise both clocks with NTP (timedatectl set-ntp true, or chronyd)"
