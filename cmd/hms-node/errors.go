package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

// target is the far end of a CLI verb, named in its failure messages.
type target struct {
	agent   bool          // the local agent's API rather than the control plane
	addr    string        // the control plane's host:port, or the agent's socket
	config  string        // the client config holding the CA and admin credential
	timeout time.Duration // the bound of the call; 0 for none (--follow)
}

// callError is a failed call of a CLI verb: what it did, to whom, and why.
// Its message, from explain, says what failed and what to do; it is what
// main prints.
type callError struct {
	what string // "apply FILE", "list", ...; may be empty
	to   target
	err  error
}

func (e *callError) Error() string { return explain(e.what, e.to, e.err) }
func (e *callError) Unwrap() error { return e.err }

// rpcError is a failed call to the control plane, ready to return from a
// verb.
func rpcError(to target, what string, err error) error {
	return &callError{what: what, to: to, err: err}
}

const (
	controlHint = "is `hms-node control` running? check --control / HMS_CONTROL"
	agentHint   = "is `hms-node agent` running on this node? check --socket"
)

// explain turns a failed call into one line for an operator. It is the
// only place the CLI words transport failures: every verb's error path
// goes through callError.
func explain(what string, to target, err error) string {
	prefix := ""
	if what != "" {
		prefix = what + ": "
	}
	if to.agent {
		return prefix + explainAgent(to, err)
	}
	return prefix + explainControl(to, err)
}

// explainControl words a gRPC failure of the control-plane API.
func explainControl(to target, err error) string {
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return timedOut("the control plane at "+to.addr, to.timeout) + " — " + controlHint
		}
		return err.Error()
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if trustFailure(msg) {
			return untrusted(to, msg)
		}
		if r := dialReason(msg); r != "" {
			return fmt.Sprintf("cannot reach the control plane at %s: %s — %s", to.addr, r, controlHint)
		}
		return fmt.Sprintf("cannot reach the control plane at %s: %s — %s", to.addr, msg, controlHint)
	case codes.DeadlineExceeded:
		return timedOut("the control plane at "+to.addr, to.timeout) + " — is it overloaded, or is " + to.addr + " the right address? check --control / HMS_CONTROL"
	case codes.Unauthenticated:
		if trustFailure(msg) {
			return untrusted(to, msg)
		}
		return fmt.Sprintf("the control plane at %s did not accept the admin credential of %s (%s) — use the admin.yaml that control plane wrote (<data-dir>/admin.yaml) with --config or HMS_CONFIG", to.addr, to.config, msg)
	case codes.PermissionDenied:
		return fmt.Sprintf("permission denied by the control plane at %s: %s — this verb needs the admin credential: --config <data-dir>/admin.yaml of that control plane (or HMS_CONFIG)", to.addr, msg)
	case codes.NotFound:
		if strings.Contains(msg, "hms-node list") {
			return msg
		}
		return msg + " — `hms-node list` shows what exists"
	default: // InvalidArgument and the rest: the server's words, unchanged (manifest file:line: field)
		return msg
	}
}

// explainAgent words a failure of the local agent's API. Replies of the
// agent itself (*localapi.StatusError) are its own words, unchanged.
func explainAgent(to target, err error) string {
	var se *localapi.StatusError
	switch {
	case errors.As(err, &se):
		return se.Message
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot reach the agent at %s: connection refused — %s", to.addr, agentHint)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("cannot reach the agent at %s: no such socket — %s", to.addr, agentHint)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("permission denied on the agent socket %s — run as root (the socket is mode 0600 and callers are checked)", to.addr)
	case errors.Is(err, context.DeadlineExceeded):
		return timedOut("the agent at "+to.addr, to.timeout) + " — `hms-node doctor` checks this node"
	}
	return fmt.Sprintf("agent at %s: %v", to.addr, err)
}

// timedOut says who did not answer, and within how long when known.
func timedOut(who string, d time.Duration) string {
	if d <= 0 {
		return who + " did not answer in time"
	}
	return fmt.Sprintf("%s did not answer within %s (timed out)", who, d)
}

// untrusted is the message of a TLS failure between the CLI and the
// control plane: the CA and credential of the client config are not that
// control plane's.
func untrusted(to target, msg string) string {
	if d := tlsDetail(msg); !strings.Contains(d, "x509:") && !strings.Contains(d, "tls:") {
		// The chain is of the config's CA, but the server's identity is
		// not the control plane's: the address is another mesh member.
		return fmt.Sprintf("the server at %s is not the control plane of %s (%s) — check --control / HMS_CONTROL: it must be the control plane's API address (port 9090 by default)",
			to.addr, to.config, d)
	}
	return fmt.Sprintf("TLS with the control plane at %s failed (%s): the CA in %s is not that control plane's — use the admin.yaml it wrote (<data-dir>/admin.yaml) with --config or HMS_CONFIG, or point --control at the control plane of this config",
		to.addr, tlsDetail(msg), to.config)
}

// trustFailure says whether a gRPC message is a certificate check that
// failed, on either side.
func trustFailure(msg string) bool {
	for _, s := range []string{"x509:", "tls:", "authentication handshake failed"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// tlsDetail cuts gRPC's wrapping off a TLS failure: "x509: certificate
// signed by unknown authority" rather than the whole transport chain.
func tlsDetail(msg string) string {
	for _, s := range []string{"x509:", "remote error: tls:", "tls:", "authentication handshake failed: "} {
		if i := strings.Index(msg, s); i >= 0 {
			d := strings.TrimPrefix(msg[i:], "authentication handshake failed: ")
			d, _, _ = strings.Cut(d, " (possibly because")
			return strings.TrimRight(d, `"`)
		}
	}
	return msg
}

// dialReason picks the operating-system reason out of a gRPC transport
// message, e.g. "connection refused".
func dialReason(msg string) string {
	for _, s := range []string{"connection refused", "no such host", "i/o timeout", "network is unreachable",
		"no route to host", "connection reset by peer", "missing port in address", "too many colons"} {
		if strings.Contains(msg, s) {
			return s
		}
	}
	return ""
}
