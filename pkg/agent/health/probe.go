package health

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Check is a service's health check, from its manifest's health section.
type Check struct {
	// Path is the HTTP GET path; "" checks with a TCP connect.
	Path string
	// Interval between probes. Zero: 10s.
	Interval time.Duration
	// Timeout of one probe, connect included. Zero: 2s.
	Timeout time.Duration
}

const (
	defaultInterval = 10 * time.Second
	defaultTimeout  = 2 * time.Second
)

func (c Check) interval() time.Duration {
	if c.Interval <= 0 {
		return defaultInterval
	}
	return c.Interval
}

func (c Check) timeout() time.Duration {
	if c.Timeout <= 0 {
		return defaultTimeout
	}
	return c.Timeout
}

// Dialer dials into the instance's pod netns; the agent's netns dialer
// implements it, as does *net.Dialer for an address reachable from here.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Probe runs one check against addr (such as "127.0.0.1:7000" inside the
// pod) through d: a TCP connect, or an HTTP GET of c.Path that must answer
// 2xx or 3xx. Redirects are not followed: a 3xx means the server is up.
func Probe(ctx context.Context, d Dialer, addr string, c Check) error {
	if d == nil {
		d = &net.Dialer{}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	if c.Path == "" {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp probe: %w", err)
		}
		return conn.Close()
	}
	return probeHTTP(ctx, d, addr, c.Path)
}

func probeHTTP(ctx context.Context, d Dialer, addr, path string) error {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	// A transport per probe: a kept-alive connection would hide an
	// instance that stopped accepting new ones.
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	req.Header.Set("User-Agent", "hms-node-health")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http get %s%s: status %s", addr, path, resp.Status)
	}
	return nil
}
