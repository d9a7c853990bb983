package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hms-node/hms-node/internal/testapp"
	"github.com/hms-node/hms-node/internal/testbed"
)

// An enrolled pod's DNS goes to the agent's in-pod 127.0.0.1:15053 even
// though the pod has no route to its resolver: through connect (glibc
// connects its UDP socket) and through sendmsg/recvmsg (unconnected
// senders), with the reply's source restored. Names outside the mesh are
// forwarded to --dns-upstream, a local fake on the host's loopback.
func TestPrivilegedDNSRedirectedToPodListener(t *testing.T) {
	testbed.RequirePrivileged(t)
	upstream := startFakeUpstream(t)
	s := newSameNode(t, "--dns-upstream", upstream)
	// 192.0.2.53 (TEST-NET-1): the pod has no route there at all.
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 192.0.2.53\noptions attempts:1 timeout:2\n"), 0o644)
	before := s.agent.counters()

	out, err := run(t, s.client, "unshare", "-m", "sh", "-c",
		"mount --bind "+resolv+" /etc/resolv.conf && exec getent ahostsv4 notify.test")
	if err != nil {
		t.Fatalf("getent in the pod: %v\n%s", err, out)
	}
	mustContain(t, out, "10.9.9.9")

	out, err = run(t, s.client, testApp, "dnsq", "--addr", "192.0.2.53:53", "--name", "notify.test")
	if err != nil {
		t.Fatalf("unconnected query: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != "10.9.9.9" {
		t.Fatalf("unconnected query answered %q", out)
	}
	if got := s.agent.counters()["dns_redirected"]; got < before["dns_redirected"]+2 {
		t.Fatalf("dns_redirected %d -> %d", before["dns_redirected"], got)
	}

	// A pod outside the mesh is not redirected: its query has nowhere to go.
	if out, err := run(t, s.bystander, testApp, "dnsq", "--addr", "192.0.2.53:53", "--name", "notify.test"); err == nil {
		t.Fatalf("bystander's DNS was answered: %q", out)
	}
}

// startFakeUpstream serves notify.test → 10.9.9.9 on the host's loopback,
// as the resolver the agent forwards non-mesh names to.
func startFakeUpstream(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go testapp.ServeDNS(pc, "notify.test", net.ParseIP("10.9.9.9"))
	return pc.LocalAddr().String()
}
