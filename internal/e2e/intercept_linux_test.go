package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/hms-node/hms-node/internal/testbed"
)

// sameNode is a node with an enrolled client, an enrolled HTTP server on
// :8080 and a bystander pod that is not in the mesh.
type sameNode struct {
	node                      *testbed.Node
	client, server, bystander *testbed.Pod
	agent                     *agentProc
	url                       string
}

func newSameNode(t *testing.T, agentFlags ...string) *sameNode {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	n := bed.MustAddNode(t, "n1")
	s := &sameNode{node: n, client: n.MustAddPod(t, "client"), server: n.MustAddPod(t, "server"),
		bystander: n.MustAddPod(t, "bystander")}
	startServer(t, s.server, 8080, testApp, "http", "--addr", ":8080", "--body", "hello-from-server")
	s.agent = newAgent(t, n, agentFlags...)
	s.agent.start()
	s.agent.enroll(s.client, "client")
	s.agent.enroll(s.server, "server", 8080)
	s.url = fmt.Sprintf("http://%s:8080/x", s.server.IP)
	return s
}

func TestPrivilegedCurlIsInterceptedAndPeerNameKept(t *testing.T) {
	s := newSameNode(t)
	before := s.agent.counters()
	out, err := curl(t, s.client, s.url)
	if err != nil {
		t.Fatalf("curl through the agent: %v\n%s", err, out)
	}
	mustContain(t, out, "hello-from-server path=/x")
	after := s.agent.counters()
	if after["redirected"] < before["redirected"]+1 {
		t.Fatalf("redirected %d -> %d: the call was not intercepted", before["redirected"], after["redirected"])
	}
	if after["inbound_steered"] != before["inbound_steered"] {
		t.Fatalf("inbound_steered %d -> %d: a same-node call crossed 15006 instead of staying in-process", before["inbound_steered"], after["inbound_steered"])
	}

	// From a pod outside the mesh, the server is reached through sk_lookup
	// and the in-pod 15006 listener.
	out, err = curl(t, s.bystander, s.url)
	if err != nil {
		t.Fatalf("curl from outside the mesh: %v\n%s", err, out)
	}
	mustContain(t, out, "hello-from-server path=/x")
	if got := s.agent.counters()["inbound_steered"]; got != after["inbound_steered"]+1 {
		t.Fatalf("inbound_steered %d -> %d, want +1", after["inbound_steered"], got)
	}

	// The application sees the address it dialled, not 127.0.0.1:15001.
	out, err = run(t, s.client, testApp, "peer", "--addr", fmt.Sprintf("%s:8080", s.server.IP))
	if err != nil {
		t.Fatalf("peer: %v\n%s", err, out)
	}
	mustContain(t, out, fmt.Sprintf("peer=%s:8080", s.server.IP))
	mustContain(t, out, "hello-from-server")

	// An AF_INET6 socket dialling the v4-mapped address is intercepted too.
	mid := s.agent.counters()
	out, err = run(t, s.client, testApp, "peer", "--v6", "--addr", fmt.Sprintf("[::ffff:%s]:8080", s.server.IP))
	if err != nil {
		t.Fatalf("peer --v6: %v\n%s", err, out)
	}
	mustContain(t, out, fmt.Sprintf("peer=[::ffff:%s]:8080", s.server.IP))
	mustContain(t, out, "hello-from-server")
	if got := s.agent.counters()["redirected"]; got != mid["redirected"]+1 {
		t.Fatalf("v4-mapped connect: redirected %d -> %d, want +1", mid["redirected"], got)
	}
}

func TestPrivilegedBystanderUntouched(t *testing.T) {
	s := newSameNode(t)
	other := s.node.MustAddPod(t, "other")
	startServer(t, other, 9090, testApp, "http", "--addr", ":9090", "--body", "hello-from-other")
	before := s.agent.counters()
	out, err := curl(t, s.bystander, fmt.Sprintf("http://%s:9090/", other.IP))
	if err != nil {
		t.Fatalf("direct path between pods outside the mesh: %v\n%s", err, out)
	}
	mustContain(t, out, "hello-from-other")
	after := s.agent.counters()
	for name, v := range before {
		if after[name] != v {
			t.Errorf("counter %s moved %d -> %d for pods outside the mesh", name, v, after[name])
		}
	}
}

func TestPrivilegedUnenrollAndBadEnrolls(t *testing.T) {
	s := newSameNode(t)
	stBefore, err := s.agent.status()
	if err != nil {
		t.Fatal(err)
	}
	// Enrolling a missing netns, or the same one twice, fails clearly and
	// changes nothing.
	out, err := s.agent.cli("enroll", "--netns", "/run/netns/hms-no-such-pod", "--service", "x")
	if err == nil || !strings.Contains(out, "no such file") {
		t.Fatalf("enroll of a missing netns: err=%v out=%q", err, out)
	}
	out, err = s.agent.cli("enroll", "--netns", s.client.NetnsPath, "--service", "again")
	if err == nil || !strings.Contains(out, "already enrolled") {
		t.Fatalf("second enroll: err=%v out=%q", err, out)
	}
	stAfter, err := s.agent.status()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(stBefore.Workloads) != fmt.Sprint(stAfter.Workloads) ||
		fmt.Sprint(stBefore.Datapath.Attachments) != fmt.Sprint(stAfter.Datapath.Attachments) ||
		fmt.Sprint(stBefore.Datapath.Counters) != fmt.Sprint(stAfter.Datapath.Counters) {
		t.Fatalf("failed enrolls changed the agent:\nbefore %+v\nafter  %+v", stBefore, stAfter)
	}

	// After unenroll the client's connects go direct again.
	if out, err := s.agent.cli("unenroll", "--netns", s.client.NetnsPath); err != nil {
		t.Fatalf("unenroll: %v\n%s", err, out)
	}
	before := s.agent.counters()
	out, err = curl(t, s.client, s.url)
	if err != nil {
		t.Fatalf("curl after unenroll: %v\n%s", err, out)
	}
	mustContain(t, out, "hello-from-server")
	if got := s.agent.counters()["redirected"]; got != before["redirected"] {
		t.Fatalf("redirected moved %d -> %d after unenroll", before["redirected"], got)
	}
	st, _ := s.agent.status()
	for _, w := range st.Workloads {
		if w.Netns == s.client.NetnsPath {
			t.Fatalf("unenrolled pod still listed: %+v", w)
		}
	}
}

// A pod whose netns has IPv6 disabled (no ::1) is enrolled and served: the
// agent's IPv6 loopback sockets are optional.
func TestPrivilegedPodWithoutIPv6(t *testing.T) {
	s := newSameNode(t)
	p := s.node.MustAddPod(t, "v4only")
	if out, err := exec.Command("nsenter", "--net="+p.NetnsPath, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.lo.disable_ipv6=1").CombinedOutput(); err != nil {
		t.Fatalf("disable IPv6 in the pod: %v\n%s", err, out)
	}
	s.agent.enroll(p, "v4only")
	before := s.agent.counters()["redirected"]
	out, err := curl(t, p, s.url)
	if err != nil {
		t.Fatalf("curl from an IPv4-only pod: %v\n%s", err, out)
	}
	mustContain(t, out, "hello-from-server")
	if got := s.agent.counters()["redirected"]; got != before+1 {
		t.Fatalf("redirected %d -> %d, want +1", before, got)
	}
}
