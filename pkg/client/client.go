// Package client lets a program ask the mesh for a service explicitly,
// through the node's agent, instead of relying on mesh DNS: Discover gives
// a service's URL, Call makes an HTTP request to it. Calls from an enrolled
// workload (a pod, or a process under `hms-node dev`) go through the mesh.
package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

// DefaultSocket is the agent's local API socket.
const DefaultSocket = localapi.DefaultSocket

// Service is a service as the local agent's registry knows it.
type Service struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	VIP       string   `json:"vip"`
	Ports     []uint32 `json:"ports"`
	Protocol  string   `json:"protocol"`
	Healthy   int      `json:"healthy_endpoints"`
}

// Client asks one agent. The zero value uses DefaultSocket and
// http.DefaultClient.
type Client struct {
	Socket string       // the agent's unix socket
	HTTP   *http.Client // for Call
}

func (c *Client) socket() string {
	if c.Socket == "" {
		return DefaultSocket
	}
	return c.Socket
}

// Lookup returns what the registry says of name ("svc" or "svc.ns").
func (c *Client) Lookup(ctx context.Context, name string) (Service, error) {
	var s Service
	err := localapi.NewClient(c.socket()).Do(ctx, "GET", "/v1/lookup?name="+url.QueryEscape(name), nil, &s)
	return s, err
}

// Discover returns the base URL of a service, e.g. Discover(ctx,
// "notify-svc") = "http://notify-svc.default.svc:7000", or an error when
// the registry has no such service or it has no healthy instance.
func (c *Client) Discover(ctx context.Context, name string) (string, error) {
	s, err := c.Lookup(ctx, name)
	if err != nil {
		return "", err
	}
	if s.Healthy == 0 {
		return "", fmt.Errorf("service %s/%s has no healthy instance", s.Namespace, s.Name)
	}
	if len(s.Ports) == 0 {
		return "", fmt.Errorf("service %s/%s declares no port", s.Namespace, s.Name)
	}
	return fmt.Sprintf("http://%s.%s.svc:%d", s.Name, s.Namespace, s.Ports[0]), nil
}

// Call sends an HTTP request to path on a service and returns the body of a
// 2xx answer. It dials the service's VIP, so it needs no mesh DNS; the
// mesh carries the call when the caller is an enrolled workload.
func (c *Client) Call(ctx context.Context, method, name, path string, body io.Reader) ([]byte, error) {
	s, err := c.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(s.Ports) == 0 {
		return nil, fmt.Errorf("service %s/%s declares no port", s.Namespace, s.Name)
	}
	u := fmt.Sprintf("http://%s:%d/%s", s.VIP, s.Ports[0], strings.TrimPrefix(path, "/"))
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Host = fmt.Sprintf("%s.%s.svc", s.Name, s.Namespace)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call %s%s: %w", name, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return data, fmt.Errorf("call %s%s: %s", name, path, resp.Status)
	}
	return data, nil
}

// Discover is Client{}.Discover.
func Discover(ctx context.Context, name string) (string, error) {
	return (&Client{}).Discover(ctx, name)
}

// Call is Client{}.Call with GET.
func Call(ctx context.Context, name, path string) ([]byte, error) {
	return (&Client{}).Call(ctx, "GET", name, path, nil)
}
