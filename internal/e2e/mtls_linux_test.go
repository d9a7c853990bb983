package e2e

import (
	"bufio"
	"bytes"
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

// Issue 4's security claims, each shown with real sockets across two
// simulated nodes: only mutual TLS 1.3 on the wire, refusals of callers
// without a mesh identity or outside allow_from, STRICT and PERMISSIVE
// plaintext, node revocation, and the identities status reports.

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

func TestPrivilegedWireIsMTLSOnly(t *testing.T) {
	m := newTwoNodes(t)
	pathMark, bodyMark := marker(t, "path"), marker(t, "body")
	server := m.startHTTPService(t, m.a2, m.n2, "notify", "notify-svc", 7000, bodyMark, "")
	client := m.n1.MustAddPod(t, "client")
	m.a1.enroll(client, "client")
	// The capture starts before the first call, so it holds the tunnel's
	// handshake; the first call may wait for n1's agent to see the instance.
	stop := capture(t, m.n2.Netns, uplink(t, m.n2))
	m.callUntil(t, client, "http://notify-svc.svc/"+pathMark+"/first", bodyMark)
	const calls = 5
	for i := 0; i < calls; i++ {
		out, err := m.curlByName(t, client, fmt.Sprintf("http://notify-svc.svc/%s/%d", pathMark, i))
		if err != nil {
			t.Fatalf("call %d: %v\n%s", i, err, out)
		}
		mustContain(t, out, fmt.Sprintf("%s path=/%s/%d", bodyMark, pathMark, i))
	}
	pcap := stop()

	ps := readPcap(t, pcap)
	cIP, sIP := client.IP.String(), server.IP.String()
	between, serverHellos := 0, 0
	for _, p := range ps {
		if p.sport != "15008" && p.dport != "15008" {
			t.Errorf("TCP packet not to or from 15008: %+v", p)
		}
		if (p.src == cIP && p.dst == sIP) || (p.src == sIP && p.dst == cIP) {
			between++
		}
		for i, ty := range p.hsTypes {
			if ty != "2" { // ServerHello
				continue
			}
			serverHellos++
			if i >= len(p.version) || p.version[i] != "0x0304" {
				t.Errorf("ServerHello negotiating %v, not TLS 1.3 (0x0304): %+v", p.version, p)
			}
		}
	}
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("captured %d TCP packets (%d between %s and %s), %d ServerHellos, %d bytes", len(ps), between, cIP, sIP, serverHellos, len(raw))
	// 5 HTTP exchanges are at least a request and a response each.
	if between < 2*calls || between != len(ps) {
		t.Errorf("%d of %d packets between the pods; want all, and at least %d", between, len(ps), 2*calls)
	}
	if serverHellos == 0 {
		t.Errorf("no TLS ServerHello captured")
	}
	for _, mk := range []string{pathMark, bodyMark} {
		if bytes.Contains(raw, []byte(mk)) {
			t.Errorf("marker %q is in the clear on the wire", mk)
		}
	}
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

func TestPrivilegedMTLSRefusals(t *testing.T) {
	m := newTwoNodes(t)
	bodyMark := marker(t, "app")
	dst := m.startHTTPService(t, m.a2, m.n2, "dst", "dst-svc", 7000, bodyMark, "policy: {allow_from: [client-svc]}\n")
	outsider := m.n1.MustAddPod(t, "outsider") // not enrolled: dials 15008 itself
	hbone := fmt.Sprintf("%s:15008", dst.IP)
	authority := fmt.Sprintf("%s:7000", dst.IP)

	denied := func() uint64 {
		st, err := m.a2.status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Denied
	}
	certFile, keyFile := writeForeignCert(t, mtls.WorkloadID("cluster.local", "default", "client-svc"), "n1")
	for _, c := range []struct{ name, cert, key, logWant string }{
		{"no client certificate", "", "", "no certificate presented"},
		{"certificate of another CA", certFile, keyFile, "unknown authority"},
	} {
		before := denied()
		out := probeTLS(t, outsider, hbone, authority, c.cert, c.key)
		t.Logf("%s: %s", c.name, out)
		if !strings.HasPrefix(out, "REFUSED") || strings.Contains(out, bodyMark) {
			t.Errorf("%s: got %q, want a refusal without application content", c.name, out)
		}
		if got := denied(); got <= before {
			t.Errorf("%s: denied of n2 %d -> %d: a refused handshake is not counted", c.name, before, got)
		}
		if !hasLogLine(m.a2.logText(), "msg=denied", "reason=handshake", c.logWant) {
			t.Errorf("%s: n2's log has no denial line naming %q", c.name, c.logWant)
		}
	}

	// A valid mesh identity outside allow_from is refused at the policy.
	intruder, friend := m.n1.MustAddPod(t, "intruder"), m.n1.MustAddPod(t, "friend")
	m.a1.enroll(intruder, "intruder")
	m.a1.enroll(friend, "client-svc")
	m.callUntil(t, friend, "http://dst-svc.svc/friend", bodyMark+" path=/friend")
	before := denied()
	out, err := m.curlByName(t, intruder, "http://dst-svc.svc/intruder")
	t.Logf("intruder: err=%v out=%q", err, out)
	if strings.Contains(out, bodyMark) {
		t.Errorf("intruder got application content: %q", out)
	}
	if got := denied(); got <= before {
		t.Errorf("intruder: denied of n2 %d -> %d", before, got)
	}
	if !hasLogLine(m.a2.logText(), "msg=denied", "reason=policy", "default/intruder is not in allow_from") {
		t.Errorf("n2's log has no policy denial of intruder")
	}
	// The allowed caller still gets through.
	m.callUntil(t, friend, "http://dst-svc.svc/again", bodyMark+" path=/again")
}

func TestPrivilegedStrictAndPermissive(t *testing.T) {
	m := newTwoNodes(t)
	bodyMark := marker(t, "app")
	svc := m.startHTTPService(t, m.a2, m.n2, "web", "web-svc", 7000, bodyMark, "")
	outsider := m.n1.MustAddPod(t, "outsider")
	url := fmt.Sprintf("http://%s:7000/plain", svc.IP)

	st, _ := m.a2.status()
	before := st.PlainRefused
	start := time.Now()
	out, err := curl(t, outsider, url)
	took := time.Since(start)
	t.Logf("plaintext with mtls: required: %s err=%v out=%q", took.Round(time.Millisecond), err, out)
	if err == nil || strings.Contains(out, bodyMark) {
		t.Fatalf("plaintext call answered under mtls: required: %q", out)
	}
	if took > 3*time.Second {
		t.Errorf("plaintext refusal took %s; want a fast reset", took)
	}
	st, _ = m.a2.status()
	if st.PlainRefused <= before {
		t.Errorf("plaintext_refused %d -> %d", before, st.PlainRefused)
	}

	out = m.control.apply("service: {name: web-svc, port: 7000}\nprotocol: http\nhealth: {path: /healthz, interval: 1s}\npolicy: {mtls: permissive}\n")
	mustContain(t, out, `"web-svc" updated`)
	waitFor(t, 8*time.Second, "plaintext accepted under mtls: permissive", func() bool {
		out, err = curl(t, outsider, url)
		return err == nil
	})
	mustContain(t, out, bodyMark+" path=/plain")
}

func TestPrivilegedRevokedNodeIsCutOff(t *testing.T) {
	m := newTwoNodes(t)
	bodyMark := marker(t, "app")
	m.startHTTPService(t, m.a2, m.n2, "notify", "notify-svc", 7000, bodyMark, "")
	client := m.n1.MustAddPod(t, "client")
	m.a1.enroll(client, "client")
	local := m.n2.MustAddPod(t, "local")
	m.a2.enroll(local, "client")
	// A tunnel from n1 is pooled before the revocation.
	m.callUntil(t, client, "http://notify-svc.svc/before", bodyMark+" path=/before")
	st, _ := m.a2.status()
	deniedBefore := st.Denied

	out, err := m.control.cli("node", "revoke", "n1")
	if err != nil {
		t.Fatalf("node revoke: %v\n%s", err, out)
	}
	mustContain(t, out, `Node "n1" revoked`)
	waitFor(t, 5*time.Second, "n1's instances to leave list", func() bool {
		l, _ := m.control.list()
		for _, s := range l.Services {
			for _, in := range s.Instances {
				if in.Node == "n1" {
					return false
				}
			}
		}
		return true
	})
	// Propagation: within a few seconds every call from n1 is refused, the
	// warm tunnel included.
	var got string
	waitFor(t, 5*time.Second, "calls from n1 to be refused", func() bool {
		got, err = m.curlByName(t, client, "http://notify-svc.svc/after")
		return !strings.Contains(got, bodyMark)
	})
	for i := 0; i < 5; i++ {
		got, err = m.curlByName(t, client, fmt.Sprintf("http://notify-svc.svc/after/%d", i))
		if strings.Contains(got, bodyMark) {
			t.Fatalf("call %d from revoked n1 answered by the application: %q", i, got)
		}
	}
	t.Logf("call from revoked n1: err=%v out=%q", err, got)
	st, _ = m.a2.status()
	if st.Denied <= deniedBefore {
		t.Errorf("n2 denied %d -> %d after refusing revoked n1", deniedBefore, st.Denied)
	}
	if !hasLogLine(m.a2.logText(), "msg=denied", "reason=revoked", "revoked node n1") {
		t.Errorf("n2's log has no denial of the revoked node")
	}
	// n2's own workloads keep working.
	m.callUntil(t, local, "http://notify-svc.svc/local", bodyMark+" path=/local")
}

func TestPrivilegedStatusShowsIdentities(t *testing.T) {
	m := newTwoNodes(t)
	out := m.control.apply("service: {name: notify-svc, port: 7000}\nprotocol: http\n")
	mustContain(t, out, "identity spiffe://cluster.local/ns/default/sa/notify-svc, certificates valid 24h0m0s")
	out = m.control.apply("service: {name: client, port: 7100}\nprotocol: http\n")
	mustContain(t, out, "identity spiffe://cluster.local/ns/default/sa/client, certificates valid")
	notify, client := m.n2.MustAddPod(t, "notify"), m.n1.MustAddPod(t, "client")
	m.a2.enroll(notify, "notify-svc", 7000)
	m.a1.enroll(client, "client")
	for _, c := range []struct {
		a   *agentProc
		pod *testbed.Pod
		svc string
	}{{m.a1, client, "client"}, {m.a2, notify, "notify-svc"}} {
		want := "spiffe://cluster.local/ns/default/sa/" + c.svc
		waitFor(t, 10*time.Second, c.svc+"'s certificate in status of "+c.a.node.Name, func() bool {
			st, err := c.a.status()
			if err != nil {
				return false
			}
			for _, w := range st.Workloads {
				if w.Netns != c.pod.NetnsPath {
					continue
				}
				exp, err := time.Parse(time.RFC3339, w.CertExpiry)
				if w.Identity != want || err != nil || !exp.After(time.Now().Add(23*time.Hour)) || w.CertSerial == "" {
					t.Logf("%s: identity %q cert_expiry %q serial %q", c.a.node.Name, w.Identity, w.CertExpiry, w.CertSerial)
					return false
				}
				t.Logf("%s: %s expires %s (serial %s)", c.a.node.Name, w.Identity, w.CertExpiry, w.CertSerial)
				return true
			}
			return false
		})
	}
}
