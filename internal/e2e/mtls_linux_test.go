package e2e

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// Issue 4's security claims, each shown with real sockets across two
// simulated nodes: only mutual TLS 1.3 on the wire, refusals of callers
// without a mesh identity or outside allow_from, STRICT and PERMISSIVE
// plaintext, node revocation, and the identities status reports.

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
	var out string
	// The intruder's certificate is issued a moment after its enrollment:
	// call until the destination has refused it at the policy.
	waitFor(t, 10*time.Second, "the intruder to be refused", func() bool {
		out, _ = m.curlByName(t, intruder, "http://dst-svc.svc/intruder")
		return denied() > before || strings.Contains(out, bodyMark)
	})
	t.Logf("intruder: out=%q", out)
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
