package hbone

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	srcID = "spiffe://cluster.local/ns/default/sa/frontend"
	dstID = "spiffe://cluster.local/ns/default/sa/backend"
)

// testCA is a throwaway mesh CA: ECDSA P-256, SPIFFE URI SANs.
type testCA struct {
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	roots *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"hbone test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &testCA{cert: cert, key: key, roots: roots}
}

var serial atomic.Int64

// issue makes a workload certificate for a SPIFFE ID.
func (ca *testCA) issue(t testing.TB, id string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100 + serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// verifyPeer checks the chain against roots and that the leaf names want,
// as a mesh peer check does (SPIFFE IDs, no DNS names).
func verifyPeer(roots *x509.CertPool, want string, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no peer certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		leaf := cs.PeerCertificates[0]
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return err
		}
		if want != "" && (len(leaf.URIs) != 1 || leaf.URIs[0].String() != want) {
			return fmt.Errorf("peer is %v, want %s", leaf.URIs, want)
		}
		return nil
	}
}

func (ca *testCA) serverTLS(t testing.TB, id string) *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{ca.issue(t, id)},
		ClientAuth:       tls.RequireAnyClientCert, // chain checked below: SPIFFE certs have no names
		VerifyConnection: verifyPeer(ca.roots, "", x509.ExtKeyUsageClientAuth),
		NextProtos:       []string{"h2"},
	}
}

func (ca *testCA) clientTLS(t testing.TB, src, dst string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyConnection (SPIFFE ID, not host name)
		VerifyConnection:   verifyPeer(ca.roots, dst, x509.ExtKeyUsageServerAuth),
	}
	if src != "" {
		cfg.Certificates = []tls.Certificate{ca.issue(t, src)}
	}
	return cfg
}

// echoApp is the application behind the server: it echoes each connection
// and half-closes after the client's EOF.
type echoApp struct {
	ln       net.Listener
	accepted atomic.Int64
	conns    chan net.Conn
}

func newEchoApp(t testing.TB) *echoApp {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &echoApp{ln: ln, conns: make(chan net.Conn, 1024)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.accepted.Add(1)
			select {
			case a.conns <- c:
			default:
			}
			go func() {
				defer c.Close()
				if copyBuf(c, c) == nil {
					c.(*net.TCPConn).CloseWrite()
					copyBuf(io.Discard, c) // wait for the relay to close us
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return a
}

// testEnv is one HBONE server (on loopback) in front of an echo app, and a
// pool pointed at it.
type testEnv struct {
	ca   *testCA
	app  *echoApp
	srv  *Server
	pool *Pool
	key  Key

	mu       sync.Mutex
	requests []*Request
}

func newTestEnv(t testing.TB, mod func(*testEnv)) *testEnv {
	t.Helper()
	e := &testEnv{ca: newTestCA(t), app: newEchoApp(t)}
	e.srv = &Server{
		TLS: e.ca.serverTLS(t, dstID),
		Handle: func(ctx context.Context, r *Request) (net.Conn, error) {
			e.mu.Lock()
			e.requests = append(e.requests, r)
			e.mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.app.ln.Addr().String())
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	e.key = Key{Src: srcID, Dst: dstID, IP: netip.MustParseAddr("127.0.0.1")}
	e.pool = &Pool{
		Dial: func(ctx context.Context, ip netip.Addr) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, port).String())
		},
		TLS: func(k Key) *tls.Config { return e.ca.clientTLS(t, k.Src, k.Dst) },
	}
	if mod != nil {
		mod(e)
	}
	served := make(chan error, 1)
	go func() { served <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		e.pool.Close()
		e.srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

func (e *testEnv) connect(t testing.TB) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := e.pool.Connect(ctx, e.key, e.app.ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// roundTrip writes msg and reads back as many bytes.
func roundTrip(t testing.TB, c net.Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// settle waits for the goroutine count to come back to at most base.
func settle(t testing.TB, base int, numGoroutine func() int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for numGoroutine() > base {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d, want <= %d (leak)", numGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
