package mtls

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

const td = "cluster.local"

func newTestCA(t *testing.T, trustDomain string) *CA {
	t.Helper()
	ca, err := NewRootCA(trustDomain, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issueAt issues a key pair for id on node as if at now.
func issueAt(t *testing.T, ca *CA, id, node string, ttl time.Duration, now time.Time) *tls.Certificate {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.issueAt(IssueRequest{CSR: csr, ID: id, Node: node, TTL: ttl}, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issue(t *testing.T, ca *CA, id, node string) *tls.Certificate {
	t.Helper()
	return issueAt(t, ca, id, node, time.Hour, time.Now())
}

func verifierFor(ca *CA) *Verifier {
	return &Verifier{Roots: ca.Roots(), TrustDomain: ca.TrustDomain}
}

// newIntermediate returns certPEM (intermediate, then root) and keyPEM of
// an intermediate signed by root, as an operator would hand them over.
func newIntermediate(t *testing.T, root *CA) (certPEM, keyPEM []byte, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "operator intermediate"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(12 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), root.BundlePEM()...)
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), key
}

// result is what the server side saw of one connection.
type result struct {
	id     ID
	serial string // the client certificate's serial
	err    error
}

// serve accepts TLS connections on loopback with cfg, reports each
// handshake's outcome, and echoes what verified clients send.
func serve(t *testing.T, cfg *tls.Config) (string, <-chan result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan result, 16)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c := tls.Server(raw, cfg)
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := c.HandshakeContext(ctx); err != nil {
					results <- result{err: err}
					return
				}
				cs := c.ConnectionState()
				r := result{}
				if len(cs.PeerCertificates) > 0 {
					r.id, r.err = PeerID(cs)
					r.serial = serialHex(cs.PeerCertificates[0])
				}
				results <- r
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), results
}

// dial connects with cfg and proves the connection with one echo round trip
// (in TLS 1.3 the server's verdict on the client certificate arrives after
// the client's handshake completes).
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := nc.(*tls.Conn)
	if err := roundTrip(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func roundTrip(c *tls.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

func next(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no server result")
		return result{}
	}
}

func encodeCert(der []byte) []byte { return pemBlock("CERTIFICATE", der) }

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
