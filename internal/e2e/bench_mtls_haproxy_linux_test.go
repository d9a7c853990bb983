package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// Ports of the HAProxy sidecar pair: the client-side proxy takes
// plaintext on loopback, the server-side one takes TLS on the pod IP.
const (
	haHTTPOut = 15080 // client pod, plaintext HTTP in
	haBulkOut = 15701 // client pod, plaintext TCP in
	haHTTPIn  = 15443 // server pod, mTLS HTTP in
	haBulkIn  = 15444 // server pod, mTLS TCP in
)

// haClientCfg is the client sidecar: HTTP on loopback, TLS 1.3 out with its
// own certificate, verifying the server's chain and name.
const haClientCfg = `global
	maxconn 4096
	ssl-default-server-options ssl-min-ver TLSv1.3
defaults
	timeout connect 5s
	timeout client 1m
	timeout server 1m
frontend http_out
	mode http
	bind 127.0.0.1:%[2]d
	default_backend http_tls
backend http_tls
	mode http
	http-reuse always
	server s %[1]s:%[4]d ssl crt %[6]s/client.pem ca-file %[6]s/ca.pem verify required verifyhost server.bench sni str(server.bench)
frontend bulk_out
	mode tcp
	bind 127.0.0.1:%[3]d
	default_backend bulk_tls
backend bulk_tls
	mode tcp
	server s %[1]s:%[5]d ssl crt %[6]s/client.pem ca-file %[6]s/ca.pem verify required verifyhost server.bench sni str(server.bench)
`

// haServerCfg is the server sidecar: TLS 1.3 in, the client's certificate
// required and verified, plaintext to the app on loopback.
const haServerCfg = `global
	maxconn 4096
	ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
	timeout connect 5s
	timeout client 1m
	timeout server 1m
frontend http_in
	mode http
	bind :%[1]d ssl crt %[3]s/server.pem ca-file %[3]s/ca.pem verify required
	default_backend app
backend app
	mode http
	http-reuse always
	server app 127.0.0.1:8080
frontend bulk_in
	mode tcp
	bind :%[2]d ssl crt %[3]s/server.pem ca-file %[3]s/ca.pem verify required
	default_backend bulkapp
backend bulkapp
	mode tcp
	server app 127.0.0.1:7001
`

// startHAProxyPair issues a client and a server certificate from a fresh
// root (ECDSA P-256, like the mesh's), starts haproxy in both pods and
// returns the two haproxy pids.
func startHAProxyPair(b testing.TB, client, server *testbed.Pod) (clientPid, serverPid int) {
	b.Helper()
	if _, err := exec.LookPath("haproxy"); err != nil {
		b.Fatal("haproxy is not installed (scripts/deps.sh installs it: apt-get install haproxy)")
	}
	dir := b.TempDir()
	os.Chmod(dir, 0o755)
	ca, err := mtls.NewRootCA("bench.local", 24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("ca.pem", ca.BundlePEM())
	for _, c := range []struct{ file, svc, node string }{{"client.pem", "client", "n1"}, {"server.pem", "server", "n2"}} {
		key, err := mtls.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		id := mtls.WorkloadID("bench.local", "default", c.svc)
		csr, err := mtls.NewCSR(key, id)
		if err != nil {
			b.Fatal(err)
		}
		chain, err := ca.Issue(mtls.IssueRequest{CSR: csr, ID: id, Node: c.node, TTL: 24 * time.Hour, DNSNames: []string{c.svc + ".bench"}})
		if err != nil {
			b.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			b.Fatal(err)
		}
		write(c.file, append(chain, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...))
	}
	write("server.cfg", fmt.Appendf(nil, haServerCfg, haHTTPIn, haBulkIn, dir))
	write("client.cfg", fmt.Appendf(nil, haClientCfg, server.IP, haHTTPOut, haBulkOut, haHTTPIn, haBulkIn, dir))
	for _, cfg := range []string{"server.cfg", "client.cfg"} {
		if out, err := exec.Command("haproxy", "-c", "-q", "-f", filepath.Join(dir, cfg)).CombinedOutput(); err != nil {
			b.Fatalf("haproxy -c %s: %v\n%s", cfg, err, out)
		}
	}
	sp := startProc(b, server, haHTTPIn, "haproxy", "-db", "-f", filepath.Join(dir, "server.cfg"))
	cp := startProc(b, client, haHTTPOut, "haproxy", "-db", "-f", filepath.Join(dir, "client.cfg"))
	return cp, sp
}

// startProc is startServer that returns the process's pid (nsenter execs
// the program, so the pid is the program's).
func startProc(b testing.TB, p *testbed.Pod, port int, name string, args ...string) int {
	b.Helper()
	cmd := p.Command(ctxT(b, time.Hour), name, args...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := run(b, p, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)); err == nil {
			return cmd.Process.Pid
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("%s in %s did not listen on %d", name, p.Name, port)
	return 0
}

// procCPU is the user+system CPU time a process has used so far.
func procCPU(b testing.TB, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3, state
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// procRSS is a process's resident set in MiB.
func procRSS(b testing.TB, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
