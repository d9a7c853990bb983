package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/hms-node/hms-node/pkg/api"
)

// idleTap is a control plane whose Tap follows forever and sends nothing.
type idleTap struct {
	api.UnimplementedRegistryServer
	started chan struct{}
}

func (s *idleTap) Tap(_ *api.TapRequest, st grpc.ServerStreamingServer[api.Call]) error {
	st.SendHeader(metadata.Pairs(headerTapAgents, "0/0"))
	close(s.started)
	<-st.Context().Done()
	return st.Context().Err()
}

// TestFollowNoticesFrozenControl cuts the path to the control plane
// without closing it (a host gone, a network cut): `tap --follow` must end
// with "the control plane went away" thanks to keepalive pings, not hang.
func TestFollowNoticesFrozenControl(t *testing.T) {
	defer func(p, to time.Duration) { controlPing, controlPingTimeout = p, to }(controlPing, controlPingTimeout)
	controlPing, controlPingTimeout = 10*time.Second, time.Second // gRPC's least ping interval is 10s

	ca := newCA(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{controlLeaf(t, ca)}})))
	tap := &idleTap{started: make(chan struct{})}
	api.RegisterRegistryServer(srv, tap)
	go srv.Serve(l)
	defer srv.Stop()

	px := newFreezer(t, l.Addr().String())
	cfg := writeAdminConfig(t, px.addr, ca)
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() { code <- run([]string{"tap", "notify-svc", "--follow", "--config", cfg}, &stderr) }()
	select {
	case <-tap.started:
	case c := <-code:
		t.Fatalf("tap ended before following: exit %d: %s", c, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("tap never reached the control plane")
	}
	px.frozen.Store(true)
	select {
	case c := <-code:
		if c != exitFailed || !strings.Contains(stderr.String(), "the control plane went away") {
			t.Errorf("exit %d, stderr:\n%s", c, stderr.String())
		}
	case <-time.After(25 * time.Second):
		t.Fatal("tap --follow did not notice the frozen control plane within 25s")
	}
}

// freezer forwards TCP to a backend until frozen, then holds every
// connection open while passing nothing, like a cut network.
type freezer struct {
	addr   string
	frozen atomic.Bool
}

func newFreezer(t *testing.T, backend string) *freezer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if f.frozen.Load() {
				io.Copy(io.Discard, src) // swallow, answer nothing
				return
			}
			if n > 0 {
				dst.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, b)
			mu.Unlock()
			wg.Add(2)
			go pipe(b, c)
			go pipe(c, b)
		}
	}()
	return f
}

// controlLeaf is a certificate of ca with the control plane's identity.
func controlLeaf(t *testing.T, ca testCA) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, _ := url.Parse("spiffe://test.mesh/ns/hms-system/sa/control")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "control", OrganizationalUnit: []string{"hms-node:_control"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, URIs: []*url.URL{id},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestOneShotTimesOut: a one-shot verb to a control plane that accepts
// the connection and then says nothing ends after rpcTimeout, saying so.
func TestOneShotTimesOut(t *testing.T) {
	defer func(d time.Duration) { rpcTimeout = d }(rpcTimeout)
	rpcTimeout = time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	px := newFreezer(t, l.Addr().String())
	px.frozen.Store(true)
	cfg := writeAdminConfig(t, px.addr, newCA(t))
	var stderr bytes.Buffer
	start := time.Now()
	code := run([]string{"list", "--config", cfg}, &stderr)
	want := "hms-node: list: the control plane at " + px.addr + " did not answer within 1s (timed out)"
	if code != exitFailed || !strings.HasPrefix(stderr.String(), want) || time.Since(start) > 5*time.Second {
		t.Errorf("exit %d after %s, stderr:\n%s\nwant it to start:\n%s", code, time.Since(start), stderr.String(), want)
	}
}
