package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

var testControl = target{addr: "10.0.0.5:9090", config: "/etc/hms/admin.yaml", timeout: 15 * time.Second}

// TestExplainControl pins the message of each gRPC code a control-plane
// verb can meet.
func TestExplainControl(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // the whole message
	}{
		{"refused", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.5:9090: connect: connection refused"`),
			"list: cannot reach the control plane at 10.0.0.5:9090: connection refused — is `hms-node control` running? check --control / HMS_CONTROL"},
		{"no such host", status.Error(codes.Unavailable, `name resolver error: produced zero addresses; lookup ctl: no such host`),
			"list: cannot reach the control plane at 10.0.0.5:9090: no such host — is `hms-node control` running? check --control / HMS_CONTROL"},
		{"unavailable, other", status.Error(codes.Unavailable, "etcd is down"),
			"list: cannot reach the control plane at 10.0.0.5:9090: etcd is down — is `hms-node control` running? check --control / HMS_CONTROL"},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
			"list: the control plane at 10.0.0.5:9090 did not answer within 15s (timed out) — is it overloaded, or is 10.0.0.5:9090 the right address? check --control / HMS_CONTROL"},
		{"context deadline", context.DeadlineExceeded,
			"list: the control plane at 10.0.0.5:9090 did not answer within 15s (timed out) — is `hms-node control` running? check --control / HMS_CONTROL"},
		{"unknown CA", status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`),
			"list: TLS with the control plane at 10.0.0.5:9090 failed (x509: certificate signed by unknown authority): the CA in /etc/hms/admin.yaml is not that control plane's — use the admin.yaml it wrote (<data-dir>/admin.yaml) with --config or HMS_CONFIG, or point --control at the control plane of this config"},
		{"client cert refused", status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: remote error: tls: unknown certificate authority"`),
			"list: TLS with the control plane at 10.0.0.5:9090 failed (remote error: tls: unknown certificate authority): the CA in /etc/hms/admin.yaml is not that control plane's — use the admin.yaml it wrote (<data-dir>/admin.yaml) with --config or HMS_CONFIG, or point --control at the control plane of this config"},
		{"unauthenticated", status.Error(codes.Unauthenticated, "List needs the admin's client certificate (admin.yaml)"),
			"list: the control plane at 10.0.0.5:9090 did not accept the admin credential of /etc/hms/admin.yaml (List needs the admin's client certificate (admin.yaml)) — use the admin.yaml that control plane wrote (<data-dir>/admin.yaml) with --config or HMS_CONFIG"},
		{"permission denied", status.Error(codes.PermissionDenied, "List needs the admin identity spiffe://m/ns/hms-system/sa/admin, not spiffe://m/ns/x/sa/y (node n1)"),
			"list: permission denied by the control plane at 10.0.0.5:9090: List needs the admin identity spiffe://m/ns/hms-system/sa/admin, not spiffe://m/ns/x/sa/y (node n1) — this verb needs the admin credential: --config <data-dir>/admin.yaml of that control plane (or HMS_CONFIG)"},
		{"not found", status.Error(codes.NotFound, "service default/nope does not exist"),
			"list: service default/nope does not exist — `hms-node list` shows what exists"},
		{"not found, hint given", status.Error(codes.NotFound, "service default/nope does not exist (hms-node list shows the services)"),
			"list: service default/nope does not exist (hms-node list shows the services)"},
		{"invalid argument", status.Error(codes.InvalidArgument, "m.yaml:3: replicas: unknown field"),
			"list: m.yaml:3: replicas: unknown field"},
		{"other code", status.Error(codes.FailedPrecondition, "VIP range exhausted"),
			"list: VIP range exhausted"},
	} {
		if got := rpcError(testControl, "list", tc.err).Error(); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

// TestExplainAgent dials real sockets: none, one nobody listens on, one
// whose agent replies with an error.
func TestExplainAgent(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.sock")
	if got, want := callAgent(missing, "GET", "/v1/status", nil, nil).Error(),
		"cannot reach the agent at "+missing+": no such socket — is `hms-node agent` running on this node? check --socket"; got != want {
		t.Errorf("no socket:\n got %s\nwant %s", got, want)
	}

	dead := filepath.Join(dir, "dead.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: dead, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if got, want := callAgent(dead, "GET", "/v1/status", nil, nil).Error(),
		"cannot reach the agent at "+dead+": connection refused — is `hms-node agent` running on this node? check --socket"; got != want {
		t.Errorf("refused:\n got %s\nwant %s", got, want)
	}

	live := filepath.Join(dir, "live.sock")
	ll, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `{"error":"/run/netns/p1 is already enrolled as default/a"}`)
	})}
	go srv.Serve(ll)
	defer srv.Close()
	if got, want := callAgent(live, "POST", "/v1/enroll", struct{}{}, nil).Error(), "/run/netns/p1 is already enrolled as default/a"; got != want {
		t.Errorf("agent's reply:\n got %s\nwant %s", got, want)
	}

	to := target{agent: true, addr: "/var/run/hms/agent.sock", timeout: 30 * time.Second}
	for err, want := range map[error]string{
		fmt.Errorf("dial: %w", context.DeadlineExceeded): "the agent at /var/run/hms/agent.sock did not answer within 30s (timed out) — `hms-node doctor` checks this node",
		fmt.Errorf("dial: %w", os.ErrPermission):         "permission denied on the agent socket /var/run/hms/agent.sock — run as root (the socket is mode 0600 and callers are checked)",
	} {
		if got := (&callError{to: to, err: err}).Error(); got != want {
			t.Errorf("%v:\n got %s\nwant %s", err, got, want)
		}
	}
}

// TestRunClosedPort runs `list` against a port nothing listens on: one
// line on stderr naming the address and the fix, exit 1, no usage.
func TestRunClosedPort(t *testing.T) {
	addr := closedPort(t)
	cfg := writeAdminConfig(t, addr, newCA(t))
	var stderr bytes.Buffer
	code := run([]string{"list", "--config", cfg}, &stderr)
	want := "hms-node: list: cannot reach the control plane at " + addr + ": connection refused — is `hms-node control` running? check --control / HMS_CONTROL\n"
	if code != exitFailed || stderr.String() != want {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d and:\n%s", code, stderr.String(), exitFailed, want)
	}

	// --control and $HMS_CONTROL name the address dialed, and the message.
	other := closedPort(t)
	t.Setenv("HMS_CONTROL", other)
	stderr.Reset()
	run([]string{"delete", "x", "--config", cfg}, &stderr)
	if !strings.HasPrefix(stderr.String(), "hms-node: delete x: cannot reach the control plane at "+other+": connection refused") {
		t.Errorf("HMS_CONTROL: %s", stderr.String())
	}
}

// TestRunUntrustedControl dials a TLS server whose certificate is of
// another CA than the client config's.
func TestRunUntrustedControl(t *testing.T) {
	other, same := newCA(t), newCA(t)
	for _, tc := range []struct {
		name       string
		server     testCA // issuer of the server's certificate
		want, tail string // the start of the message, and a part of it
	}{
		{"another CA", other, "hms-node: list: TLS with the control plane at ADDR failed (x509: certificate signed by unknown authority): the CA in CFG is not that control plane's", ""},
		{"not the control plane", same, "hms-node: list: the server at ADDR is not the control plane of CFG (", "SPIFFE ID) — check --control / HMS_CONTROL"},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srvCert := tc.server.leaf(t, "control", net.ParseIP("127.0.0.1"))
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvCert}})))
		go srv.Serve(l)
		cfg := writeAdminConfig(t, l.Addr().String(), same)
		var stderr bytes.Buffer
		code := run([]string{"list", "--config", cfg}, &stderr)
		srv.Stop()
		want := strings.NewReplacer("ADDR", l.Addr().String(), "CFG", cfg).Replace(tc.want)
		if got := stderr.String(); code != exitFailed || !strings.HasPrefix(got, want) || !strings.Contains(got, tc.tail) ||
			strings.Contains(got, "connection error") {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant it to start:\n%s\nand hold %q", tc.name, code, got, want, tc.tail)
		}
	}
}

// TestRunUsage: a wrong command line prints the verb's usage, then the
// reason, and exits 2; an error of a verb that ran prints no usage.
func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{"list", "--bogus"}, {"delete"}, {"apply"}, {"nope"}} {
		var stderr bytes.Buffer
		code := run(args, &stderr)
		if code != exitUsage || !strings.Contains(stderr.String(), "Usage:") || !strings.Contains(stderr.String(), "\nhms-node: ") {
			t.Errorf("%q: exit %d, stderr:\n%s", args, code, stderr.String())
		}
	}
	var stderr bytes.Buffer
	code := run([]string{"status", "--socket", filepath.Join(t.TempDir(), "none.sock")}, &stderr)
	if code != exitFailed || strings.Contains(stderr.String(), "Usage:") || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("status: exit %d, stderr:\n%s", code, stderr.String())
	}
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leafPEM issues a certificate of ca, PEM certificate and key.
func (ca testCA) leafPEM(t *testing.T, name string, ips ...net.IP) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func (ca testCA) leaf(t *testing.T, name string, ips ...net.IP) tls.Certificate {
	c, k := ca.leafPEM(t, name, ips...)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// writeAdminConfig writes an admin.yaml for addr with a credential of ca.
func writeAdminConfig(t *testing.T, addr string, ca testCA) string {
	c, k := ca.leafPEM(t, "admin")
	indent := func(b []byte) string { return "  " + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n  ") }
	body := fmt.Sprintf("control: %s\nca: |\n%s\ncert: |\n%s\nkey: |\n%s\n", addr, indent(ca.pem), indent(c), indent(k))
	p := filepath.Join(t.TempDir(), "admin.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
