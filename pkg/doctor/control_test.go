package doctor

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// fakeRegistry answers List like a control plane with one service.
type fakeRegistry struct {
	api.UnimplementedRegistryServer
}

func (fakeRegistry) List(context.Context, *api.ListRequest) (*api.ListResponse, error) {
	return &api.ListResponse{Services: []*api.Service{{Name: "notify-svc"}}, Nodes: []*api.Node{{Name: "n1"}}, Revision: 42}, nil
}

// fakeControl serves the Registry API over TLS with a certificate of the
// control plane's identity issued by a fresh CA, on loopback. It returns
// the address and a client config that trusts the CA.
func fakeControl(t *testing.T) (string, *tls.Config) {
	t.Helper()
	ca, err := mtls.NewRootCA("doctor.test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	id := mtls.WorkloadID("doctor.test", mtls.SystemNamespace, mtls.ControlService)
	csr, err := mtls.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Issue(mtls.IssueRequest{CSR: csr, ID: id, Node: mtls.ControlNode, TTL: time.Hour, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := mtls.KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cert}})))
	api.RegisterRegistryServer(gs, fakeRegistry{})
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return l.Addr().String(), &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Roots(), VerifyConnection: mtls.VerifyControlPlane}
}

// closedAddr is a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestControlAuthenticated(t *testing.T) {
	addr, tlsCfg := fakeControl(t)
	r := checkControl(context.Background(), Config{ControlTLS: tlsCfg}.withDefaults(), addr)
	if !r.OK || !strings.Contains(r.Detail, addr+" answers in ") || !strings.Contains(r.Detail, "(1 services, 1 nodes, revision 42)") {
		t.Errorf("authenticated: %+v", r)
	}
}

// Without the client config, a handshake shows who listens.
func TestControlHandshakeOnly(t *testing.T) {
	addr, _ := fakeControl(t)
	cfg := Config{ControlConfigError: errNoConfig}.withDefaults()
	r := checkControl(context.Background(), cfg, addr)
	if !r.OK || !strings.Contains(r.Detail, "answers TLS as the control plane") || !strings.Contains(r.Detail, "not authenticated: no client config at /x") {
		t.Errorf("handshake: %+v", r)
	}
	// A TLS server that is not the control plane fails the identity check.
	other := httptest.NewUnstartedServer(http.NotFoundHandler())
	other.Config.ErrorLog = log.New(io.Discard, "", 0) // its side of the refused handshake
	other.StartTLS()
	defer other.Close()
	if r := checkControl(context.Background(), cfg, other.Listener.Addr().String()); r.OK || !strings.Contains(r.Detail, "not the control plane") {
		t.Errorf("another TLS server: %+v", r)
	}
}

var errNoConfig = &configError{"no client config at /x"}

type configError struct{ s string }

func (e *configError) Error() string { return e.s }

func TestControlStopped(t *testing.T) {
	_, tlsCfg := fakeControl(t)
	addr := closedAddr(t)
	r := checkControl(context.Background(), Config{ControlTLS: tlsCfg}.withDefaults(), addr)
	if r.OK || r.Check != "control plane" || !strings.Contains(r.Detail, "connection refused") || !strings.Contains(r.Fix, "start the control plane") {
		t.Errorf("stopped, authenticated: %+v", r)
	}
	r = checkControl(context.Background(), Config{}.withDefaults(), addr)
	if r.OK || !strings.Contains(r.Detail, "connection refused") {
		t.Errorf("stopped, handshake: %+v", r)
	}
	r = checkControl(context.Background(), Config{ControlConfigError: errNoConfig}.withDefaults(), "")
	if r.OK || !strings.Contains(r.Detail, "no client config at /x; no running agent") || !strings.Contains(r.Fix, "--config") {
		t.Errorf("no address: %+v", r)
	}
}

// dateServer answers with its clock off by skew.
func dateServer(t *testing.T, skew time.Duration) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		w.Write([]byte("ok\n"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func TestClockSkew(t *testing.T) {
	cfg := Config{}.withDefaults()
	addr := dateServer(t, 0)
	if r := checkClock(context.Background(), Config{ControlHTTP: addr}.withDefaults(), ""); !r.OK || !strings.Contains(r.Detail, "within 2s of the control plane at "+addr) {
		t.Errorf("in sync: %+v", r)
	}
	ahead := dateServer(t, time.Hour)
	if r := checkClock(context.Background(), Config{ControlHTTP: ahead}.withDefaults(), ""); r.OK || !strings.Contains(r.Detail, "ahead of this node") || !strings.Contains(r.Fix, "NTP") {
		t.Errorf("an hour ahead: %+v", r)
	}
	behind := dateServer(t, -5*time.Second)
	if r := checkClock(context.Background(), Config{ControlHTTP: behind}.withDefaults(), ""); r.OK || !strings.Contains(r.Detail, "behind this node") {
		t.Errorf("5s behind: %+v", r)
	}
	// The HTTP address defaults to the API host on 9091.
	if got := controlHTTP(cfg, "10.0.0.7:9090"); got != "10.0.0.7:9091" {
		t.Errorf("default http address %q", got)
	}
	if r := checkClock(context.Background(), Config{ControlHTTP: closedAddr(t)}.withDefaults(), ""); r.OK || r.Check != "clock skew" || !strings.Contains(r.Detail, "cannot read the control plane's clock") {
		t.Errorf("stopped: %+v", r)
	}
}
