package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/hms-node/hms-node/internal/testbed"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// Environment of the test binary re-executed inside a pod as a raw TLS
// client (see init): the address to dial, and an optional client
// certificate and key (PEM files).
const (
	envTLSDial = "HMS_E2E_TLS_DIAL"
	envTLSCert = "HMS_E2E_TLS_CERT"
	envTLSKey  = "HMS_E2E_TLS_KEY"
	envTLSAuth = "HMS_E2E_TLS_AUTHORITY"
)

// init turns the test binary into the raw TLS client when it is
// re-executed in a pod; it runs before TestMain and exits.
func init() {
	if addr := os.Getenv(envTLSDial); addr != "" {
		fmt.Println(tlsProbe(addr, os.Getenv(envTLSCert), os.Getenv(envTLSKey), os.Getenv(envTLSAuth)))
		os.Exit(0)
	}
}

// tlsProbe dials addr (a pod's 15008) with TLS 1.3 and ALPN h2, presents the
// given certificate (none if empty), and if the server lets it through asks
// for an HBONE tunnel to authority and sends an HTTP request in it. It
// returns "REFUSED: ..." or "ACCEPTED: <what the application answered>".
func tlsProbe(addr, certFile, keyFile, authority string) string {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}, InsecureSkipVerify: true}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return "SETUP: " + err.Error()
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "REFUSED: handshake: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// In TLS 1.3 the client finishes its handshake before the server has
	// judged the client certificate: the verdict arrives with the first
	// read, here the server's HTTP/2 SETTINGS.
	cc, err := (&http2.Transport{}).NewClientConn(c)
	if err != nil {
		return "REFUSED: h2: " + err.Error()
	}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodConnect, "http://"+authority, pr)
	req.Host = authority
	resp, err := cc.RoundTrip(req.WithContext(ctx))
	if err != nil {
		return "REFUSED: connect: " + err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("REFUSED: connect status %d", resp.StatusCode)
	}
	fmt.Fprintf(pw, "GET /probe HTTP/1.0\r\nHost: x\r\n\r\n")
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return "ACCEPTED: " + string(body)
}

// marker returns a unique string to look for in content and captures.
func marker(t *testing.T, what string) string {
	t.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return what + "-" + hex.EncodeToString(b[:])
}

// startHTTPService applies a service, starts hms-testapp http answering
// body on port in a new pod of node, enrolls it and waits until list shows
// it healthy.
func (m *twoNodes) startHTTPService(t *testing.T, a *agentProc, node *testbed.Node, pod, svc string, port int, body, extra string) *testbed.Pod {
	t.Helper()
	m.control.apply(fmt.Sprintf("service: {name: %s, port: %d}\nprotocol: http\nhealth: {path: /healthz, interval: 1s}\n%s", svc, port, extra))
	p := node.MustAddPod(t, pod)
	startServer(t, p, port, testApp, "http", "--addr", fmt.Sprintf(":%d", port), "--body", body)
	a.enroll(p, svc, port)
	waitFor(t, 10*time.Second, svc+" healthy in list", func() bool { return m.control.healthyInstances(svc) >= 1 })
	return p
}

// callUntil calls url by name from p until the answer contains want.
func (m *twoNodes) callUntil(t *testing.T, p *testbed.Pod, url, want string) string {
	t.Helper()
	var out string
	waitFor(t, 8*time.Second, "a call to "+url+" answering "+want, func() bool {
		var err error
		out, err = m.curlByName(t, p, url)
		return err == nil && strings.Contains(out, want)
	})
	return out
}

// uplink names node's end of its veth into the fabric: the veth of the
// node netns that is not a port of the node's bridge.
func uplink(t *testing.T, node *testbed.Node) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", filepath.Base(node.Netns), "-o", "link", "show", "type", "veth").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link in %s: %v\n%s", node.Name, err, out)
	}
	var found []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.Contains(line, " master ") {
			continue
		}
		found = append(found, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
	}
	if len(found) != 1 {
		t.Fatalf("want one uplink veth in %s, found %q in:\n%s", node.Name, found, out)
	}
	return found[0]
}

// capture runs tshark on an interface of a netns (bounded by -a duration)
// until stop is called; stop returns the pcap path.
func capture(t *testing.T, netns, ifname string) (stop func() string) {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatalf("tshark is needed (scripts/deps.sh installs it): %v", err)
	}
	pcap := filepath.Join(t.TempDir(), "wire.pcap")
	cmd := exec.Command("nsenter", "--net="+netns, "tshark", "-i", ifname, "-w", pcap, "-f", "tcp", "-a", "duration:25")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !once && strings.Contains(sc.Text(), "Capturing on") {
				once = true
				close(started)
			}
		}
	}()
	wait := func() {
		<-done
		cmd.Wait()
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); wait() })
	select {
	case <-started:
	case <-done:
		wait()
		t.Fatalf("tshark exited before capturing:\n%s", log.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("tshark did not start capturing within 10s:\n%s", log.String())
	}
	time.Sleep(300 * time.Millisecond) // the BPF filter is set once the line is printed; be generous
	return func() string {
		time.Sleep(300 * time.Millisecond) // let the last packets reach the file
		cmd.Process.Signal(syscall.SIGINT)
		wait()
		t.Logf("tshark: %s", strings.TrimSpace(log.String()))
		return pcap
	}
}

// packet is one TCP packet of a capture, as tshark dissects it.
type packet struct {
	src, dst         string
	sport, dport     string
	hsTypes, version []string // TLS handshake types, supported_versions
}

func readPcap(t *testing.T, pcap string) []packet {
	t.Helper()
	out, err := exec.Command("tshark", "-r", pcap, "-d", "tcp.port==15008,tls", "-T", "fields", "-E", "separator=/t",
		"-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport", "-e", "tcp.dstport",
		"-e", "tls.handshake.type", "-e", "tls.handshake.extensions.supported_version").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v", err)
	}
	var ps []packet
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 6 {
			continue
		}
		split := func(s string) []string {
			if s == "" {
				return nil
			}
			return strings.Split(s, ",")
		}
		ps = append(ps, packet{src: f[0], dst: f[1], sport: f[2], dport: f[3], hsTypes: split(f[4]), version: split(f[5])})
	}
	return ps
}

// writeForeignCert makes a workload certificate for id from a root that is
// not the mesh's (same trust domain) and writes it and its key as PEM.
func writeForeignCert(t *testing.T, id, node string) (certFile, keyFile string) {
	t.Helper()
	ca, err := mtls.NewRootCA("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := mtls.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Issue(mtls.IssueRequest{CSR: csr, ID: id, Node: node, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, chain, 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
	return certFile, keyFile
}

// probeTLS re-executes the test binary in p as a raw TLS client of addr.
func probeTLS(t *testing.T, p *testbed.Pod, addr, authority, certFile, keyFile string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := p.Command(ctxT(t, 20*time.Second), self)
	cmd.Env = append(os.Environ(), envTLSDial+"="+addr, envTLSAuth+"="+authority, envTLSCert+"="+certFile, envTLSKey+"="+keyFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("TLS probe in %s: %v\n%s", p.Name, err, out)
	}
	return strings.TrimSpace(string(out))
}

// hasLogLine reports whether one line of log contains every part.
func hasLogLine(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// logText is the agent's log so far.
func (a *agentProc) logText() string {
	b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
	return string(b)
}
