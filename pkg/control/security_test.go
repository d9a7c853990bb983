package control

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hms-node/hms-node/pkg/api"
)

// A node must never obtain the control plane's own identities: they live
// in a reserved namespace, and the admin role also checks the node the
// certificate was issued to.
func TestSystemNamespaceIsReserved(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	n1 := joinNode(t, s, "n1")
	_, err := n1.identity.IssueWorkload(ctxT(t, 5*time.Second), &api.IssueWorkloadRequest{
		Namespace: systemNamespace, Service: adminService, Csr: workloadCSR(t, systemNamespace, adminService)})
	wantCode(t, "issue the admin identity to a node", err, codes.PermissionDenied, "reserved")

	stream, err := n1.agents.Connect(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&api.AgentMessage{Msg: &api.AgentMessage_Hello{Hello: hello("n1", 0,
		&api.Instance{Namespace: systemNamespace, Service: adminService, Workload: "w", Ip: "10.1.0.9", Port: 1})}})
	_, err = stream.Recv()
	wantCode(t, "register an instance in the reserved namespace", err, codes.InvalidArgument, "reserved")
}

// The token's pin proves the mesh CA, not the control plane: a server
// holding a node certificate of the same CA must not get the token.
func TestJoinRefusesANodePosingAsTheControlPlane(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	n1 := joinNode(t, s, "n1")
	tok := createToken(t, s, time.Minute)
	root, _ := pem.Decode(n1.bundle)
	fake := &tls.Certificate{Certificate: append(append([][]byte{}, n1.cert.Certificate...), root.Bytes), PrivateKey: n1.cert.PrivateKey}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*fake}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	cfg, err := JoinTLS(tok)
	if err != nil {
		t.Fatal(err)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	c, err := d.DialContext(context.Background(), "tcp", l.Addr().String())
	if err == nil {
		c.Close()
		t.Fatal("JoinTLS accepted a node's certificate as the control plane")
	}
}

// A token cannot take over the name of a node that is connected.
func TestJoinRefusesAConnectedNodesName(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	n1 := joinNode(t, s, "n1")
	a := connectAgent(t, n1.agents, hello("n1", 0))
	defer a.stop()
	a.next(5 * time.Second)
	_, _, err := join(t, s, createToken(t, s, time.Minute), "n1")
	wantCode(t, "join as a connected node", err, codes.AlreadyExists, "is connected")
}

// During an upgrade the old agent's late report must not move an
// instance onto the old stream's lease, which expires with it.
func TestLateReportOfTheOldStreamKeepsTheInstance(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	n1 := joinNode(t, s, "n1")
	in := inst("web", "pod-1", "10.1.0.1")
	old := connectAgent(t, n1.agents, hello("n1", 0, in))
	old.next(5 * time.Second)
	upgraded := connectAgent(t, n1.agents, hello("n1", 0, in))
	upgraded.next(5 * time.Second)
	old.send(&api.AgentMessage{Msg: &api.AgentMessage_Instance{Instance: &api.InstanceUpdate{Instance: in}}})
	time.Sleep(200 * time.Millisecond)
	old.stop()
	time.Sleep(2500 * time.Millisecond) // past 3 heartbeats and etcd's 2 s minimum TTL
	if n := instanceCount(t, reg, "n1"); n != 1 {
		t.Fatalf("%d instances after the old stream's late report and end, want 1", n)
	}
}
