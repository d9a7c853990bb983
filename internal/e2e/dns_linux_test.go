package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// An enrolled pod's DNS goes to the in-pod 127.0.0.1:15053 even though the
// pod has no route to its resolver: through connect (glibc connects its UDP
// socket) and through sendmsg/recvmsg (unconnected senders), with the
// reply's source restored. The "resolver" is a local fake in the pod.
func TestPrivilegedDNSRedirectedToPodListener(t *testing.T) {
	s := newSameNode(t)
	startFakeResolver(t, s.client)
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

// startFakeResolver runs the fake resolver on the in-pod DNS port and
// waits until it answers on the pod's loopback.
func startFakeResolver(t *testing.T, p *testbed.Pod) {
	t.Helper()
	if _, err := p.Start(context.Background(), testApp, "dns", "--addr", "127.0.0.1:15053", "--name", "notify.test", "--ip", "10.9.9.9"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if out, err := run(t, p, testApp, "dnsq", "--addr", "127.0.0.1:15053", "--name", "notify.test"); err == nil && strings.TrimSpace(out) == "10.9.9.9" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("fake resolver did not come up")
}
