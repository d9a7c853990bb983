package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// Client calls the agent's local API. It is what CLI verbs that talk to an
// agent (--socket) use. Safe for concurrent use.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the agent listening on socketPath. It
// connects lazily, on the first Do.
func NewClient(socketPath string) *Client {
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "unix", socketPath)
			if err != nil {
				return nil, &dialError{path: socketPath, err: err}
			}
			return c, nil
		},
		DisableCompression: true,
		MaxIdleConns:       2,
	}
	return &Client{path: socketPath, hc: &http.Client{Transport: tr}}
}

// StatusError is a non-2xx reply from the agent. Error returns the agent's
// one-line message, ready to print as the CLI's reason.
type StatusError struct {
	// Code is the HTTP status.
	Code int
	// Message is the "error" field of the reply, or the status text.
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// dialError explains a failed connect in terms an operator can act on.
type dialError struct {
	path string
	err  error
}

func (e *dialError) Error() string {
	switch {
	case errors.Is(e.err, fs.ErrNotExist):
		return fmt.Sprintf("no agent socket at %s: is the agent running? (hms-node agent)", e.path)
	case errors.Is(e.err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing answers on %s: is the agent running? (hms-node agent)", e.path)
	case errors.Is(e.err, fs.ErrPermission):
		return fmt.Sprintf("permission denied on %s: run as root or as the agent's user", e.path)
	}
	return fmt.Sprintf("connect to agent at %s: %v", e.path, e.err)
}

func (e *dialError) Unwrap() error { return e.err }

// Do sends a request with in (if not nil) as its JSON body and decodes a
// 2xx reply's JSON body into out (if not nil). A non-2xx reply is a
// *StatusError carrying the agent's message.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	// The host is never resolved: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://hms-agent"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is a placeholder; do not print it
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode reply to %s %s: %w", method, path, err)
	}
	return nil
}

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb errorBody
	msg := ""
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	} else if s := oneLine(string(b)); s != "" && len(s) < 200 {
		msg = s
	} else {
		msg = fmt.Sprintf("agent replied %s", resp.Status)
	}
	return &StatusError{Code: resp.StatusCode, Message: msg}
}
