package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"
)

// mesh is a server and the verifier both sides share.
type mesh struct {
	ca        *CA
	v         *Verifier
	serverID  string
	serverCrt *tls.Certificate
}

func newMesh(t *testing.T) *mesh {
	ca := newTestCA(t, td)
	id := WorkloadID(td, "default", "server")
	return &mesh{ca: ca, v: verifierFor(ca), serverID: id, serverCrt: issue(t, ca, id, "node-s")}
}

func (m *mesh) server(t *testing.T, authorize func(ID, *x509.Certificate) error) (string, <-chan result) {
	return serve(t, ServerConfig(StaticCertificate(m.serverCrt), m.v, authorize))
}

func (m *mesh) client(c *tls.Certificate, expect func(ID) error) *tls.Config {
	return ClientConfig(StaticClientCertificate(c), m.v, expect)
}

func TestMutualHandshake(t *testing.T) {
	m := newMesh(t)
	addr, results := m.server(t, nil)
	clientID := WorkloadID(td, "default", "client")
	conn, err := dial(t, addr, m.client(issue(t, m.ca, clientID, "node-c"), ExpectID(m.serverID)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := next(t, results)
	if r.err != nil || r.id.String() != clientID {
		t.Fatalf("server saw %v, %v; want %s", r.id, r.err, clientID)
	}
	cs := conn.ConnectionState()
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "h2" || cs.DidResume {
		t.Fatalf("version %x alpn %q resumed %v", cs.Version, cs.NegotiatedProtocol, cs.DidResume)
	}
	got, err := PeerID(cs)
	if err != nil || got.String() != m.serverID {
		t.Fatalf("client PeerID = %v, %v; want %s", got, err, m.serverID)
	}
	if _, err := PeerID(tls.ConnectionState{}); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("PeerID of nothing: %v", err)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	m := newMesh(t)
	m.v.Revoked = func(node string) bool { return node == "bad-node" }
	other := newTestCA(t, td)
	otherTD := newTestCA(t, "other.local")
	both := m.ca.Roots()
	both.AddCert(otherTD.Cert)
	good := WorkloadID(td, "default", "client")
	for name, tc := range map[string]struct {
		cert *tls.Certificate
		v    *Verifier // server's, when not m.v
		want error
		msg  string
	}{
		"no certificate":  {cert: &tls.Certificate{}, msg: "didn't provide a certificate"},
		"another ca":      {cert: issue(t, other, good, "node-c"), want: ErrUnknownAuthority},
		"expired":         {cert: issueAt(t, m.ca, good, "node-c", time.Hour, time.Now().Add(-2*time.Hour)), want: ErrExpired},
		"revoked node":    {cert: issue(t, m.ca, good, "bad-node"), want: ErrRevoked, msg: "revoked node bad-node"},
		"revoked node id": {cert: issue(t, m.ca, NodeID(td, "bad-node"), ""), want: ErrRevoked},
		"wrong trust domain": {cert: issue(t, otherTD, WorkloadID("other.local", "default", "c"), "n"),
			v: &Verifier{Roots: both, TrustDomain: td}, want: ErrWrongTrustDomain},
	} {
		t.Run(name, func(t *testing.T) {
			v := m.v
			if tc.v != nil {
				v = tc.v
			}
			addr, results := serve(t, ServerConfig(StaticCertificate(m.serverCrt), v, nil))
			conn, err := dial(t, addr, m.client(tc.cert, nil))
			if err == nil {
				conn.Close()
				t.Fatal("client was accepted")
			}
			r := next(t, results)
			if r.err == nil {
				t.Fatal("server reported success")
			}
			if tc.want != nil && !errors.Is(r.err, tc.want) {
				t.Fatalf("server error %q, want %v", r.err, tc.want)
			}
			if !strings.Contains(r.err.Error(), tc.msg) {
				t.Fatalf("server error %q, want it to mention %q", r.err, tc.msg)
			}
			t.Logf("refused: %v (client saw %v)", r.err, err)
		})
	}
}

func TestTLS12Refused(t *testing.T) {
	m := newMesh(t)
	addr, results := m.server(t, nil)
	cfg := m.client(issue(t, m.ca, WorkloadID(td, "default", "c"), "n"), nil)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if conn, err := dial(t, addr, cfg); err == nil {
		conn.Close()
		t.Fatal("TLS 1.2 client accepted")
	}
	if r := next(t, results); r.err == nil || !strings.Contains(r.err.Error(), "version") {
		t.Fatalf("server error %v, want a protocol version refusal", r.err)
	}
}

func TestAuthorizeAndExpectHooks(t *testing.T) {
	m := newMesh(t)
	denied := WorkloadID(td, "default", "intruder")
	addr, results := m.server(t, func(id ID, cert *x509.Certificate) error {
		if node, _ := NodeOf(cert); id.Service == "intruder" && node == "node-c" {
			return errors.New("policy allows only frontend")
		}
		return nil
	})
	if conn, err := dial(t, addr, m.client(issue(t, m.ca, denied, "node-c"), nil)); err == nil {
		conn.Close()
		t.Fatal("authorize hook did not deny")
	}
	r := next(t, results)
	if !errors.Is(r.err, ErrUnauthorizedPeer) || !strings.Contains(r.err.Error(), "policy allows only frontend") {
		t.Fatalf("server error %v", r.err)
	}
	allowed := issue(t, m.ca, WorkloadID(td, "default", "frontend"), "node-c")
	conn, err := dial(t, addr, m.client(allowed, nil))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if r := next(t, results); r.err != nil {
		t.Fatal(r.err)
	}
	// The client refuses a server that is not the destination it expects.
	_, err = dial(t, addr, m.client(allowed, ExpectID(WorkloadID(td, "default", "elsewhere"))))
	if !errors.Is(err, ErrUnauthorizedPeer) {
		t.Fatalf("client error %v, want ErrUnauthorizedPeer", err)
	}
	next(t, results)
}

func TestServerFromIntermediate(t *testing.T) {
	root := newTestCA(t, td)
	certPEM, keyPEM, _ := newIntermediate(t, root)
	inter, err := LoadCA(td, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	v := verifierFor(root)
	srv := issue(t, inter, WorkloadID(td, "default", "s"), "n1")
	addr, results := serve(t, ServerConfig(StaticCertificate(srv), v, nil))
	conn, err := dial(t, addr, ClientConfig(StaticClientCertificate(issue(t, root, WorkloadID(td, "default", "c"), "n2")), v, nil))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if r := next(t, results); r.err != nil {
		t.Fatal(r.err)
	}
}
