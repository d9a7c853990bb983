package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// gRPC through the L7 proxy of a `protocol: http` service, across nodes
// and on one node: the call stays HTTP/2 end to end (a gRPC server speaks
// nothing else), trailers arrive (a unary OK ends with grpc-status in
// them; without them grpc-go fails the call), an error status in a
// trailers-only response comes back as that status, and a server stream
// delivers its first message while it stays open. Tap shows the calls as
// gRPC with their grpc-status.
func TestPrivilegedGRPCThroughTheProxy(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: grpc-svc\nport: 7000\nprotocol: http\n")
	srv := m.n2.MustAddPod(t, "grpc-srv")
	startServer(t, srv, 7000, testApp, "grpc", "--addr", ":7000", "--name", "greeter")
	m.a2.enroll(srv, "grpc-svc", 7000)
	waitFor(t, 10*time.Second, "grpc-svc healthy", func() bool { return m.control.healthyInstances("grpc-svc") == 1 })

	far, near := m.n1.MustAddPod(t, "client"), m.n2.MustAddPod(t, "near")
	m.a1.enroll(far, "client")
	m.a2.enroll(near, "near")
	for _, c := range []struct {
		name string
		pod  *testbed.Pod
	}{{"across nodes", far}, {"same node", near}} {
		name := c.name
		var out string
		var err error
		// The client's first call may race its pod's first certificate.
		waitFor(t, 10*time.Second, "a gRPC call "+name, func() bool {
			out, err = m.inPod(t, c.pod, testApp, "grpc-client", "--addr", "grpc-svc.svc:7000", "--name", "greeter")
			return err == nil
		})
		for _, want := range []string{"check greeter=SERVING\n", "check no-such-service=NotFound\n", "watch greeter=SERVING\n"} {
			if !strings.Contains(out, want) {
				t.Fatalf("%s: gRPC client printed %q, want a line %q", name, out, want)
			}
		}
	}

	var calls []tappedCall
	waitFor(t, 5*time.Second, "tap to show the gRPC calls", func() bool {
		stdout, stderr, err := m.control.cliSplit("tap", "grpc-svc", "--last", "20", "-o", "json")
		if err != nil {
			t.Fatalf("tap: %v\n%s%s", err, stdout, stderr)
		}
		calls = decodeCalls(t, stdout)
		ok, notFound := 0, 0
		for _, c := range calls {
			if c.Protocol != "gRPC" || c.Path != "/grpc.health.v1.Health/Check" {
				continue
			}
			switch c.GRPCStatus {
			case "0":
				ok++
			case "5":
				notFound++
			}
		}
		return ok >= 2 && notFound >= 2
	})
	for _, c := range calls {
		if c.Protocol != "gRPC" || c.Method != "POST" || c.Status != 200 {
			t.Fatalf("tapped call %+v, want protocol gRPC, POST, HTTP 200", c)
		}
	}
}
