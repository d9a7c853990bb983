package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRootCAIssuesWorkloadCert(t *testing.T) {
	ca := newTestCA(t, td)
	if !strings.HasPrefix(ca.Hash(), "sha256:") || len(ca.Hash()) != len("sha256:")+64 {
		t.Fatalf("Hash() = %q", ca.Hash())
	}
	if certs, err := parseCertsPEM(ca.BundlePEM()); err != nil || len(certs) != 1 || !certs[0].Equal(ca.Cert) {
		t.Fatalf("BundlePEM is not the root: %v", err)
	}
	id := WorkloadID(td, "default", "notify-svc")
	before := time.Now()
	c := issue(t, ca, id, "node-a")
	leaf := c.Leaf
	if len(c.Certificate) != 1 {
		t.Fatalf("a root CA's chain has %d certs, want the leaf alone", len(c.Certificate))
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		t.Fatalf("URI SANs = %v, want [%s]", leaf.URIs, id)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("leaf key %T / %v, want ECDSA P-256", leaf.PublicKey, leaf.SignatureAlgorithm)
	}
	if node, err := NodeOf(leaf); err != nil || node != "node-a" {
		t.Fatalf("NodeOf = %q, %v; want node-a", node, err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Fatalf("ExtKeyUsage = %v", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Fatal("leaf is a CA")
	}
	if d := before.Sub(leaf.NotBefore); d < 59*time.Second || d > 61*time.Second {
		t.Fatalf("NotBefore %v back, want a minute", d)
	}
	if leaf.SerialNumber.BitLen() < 100 || leaf.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial %d bits, want random 128", leaf.SerialNumber.BitLen())
	}
	got, vleaf, err := verifierFor(ca).Verify(c.Certificate)
	if err != nil || got.String() != id || vleaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("Verify = %v, %v", got, err)
	}
}

func TestIssueRejectsAndClamps(t *testing.T) {
	ca := newTestCA(t, td)
	key, _ := NewKey()
	id := WorkloadID(td, "default", "a")
	csr, _ := NewCSR(key, id)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	csr384, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	csrRSA, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	for name, tc := range map[string]struct {
		req  IssueRequest
		want string
	}{
		"other trust domain": {IssueRequest{CSR: csr, ID: WorkloadID("evil.org", "default", "a"), Node: "n", TTL: time.Hour}, "trust domain"},
		"bad id":             {IssueRequest{CSR: csr, ID: "spiffe://cluster.local/x", Node: "n", TTL: time.Hour}, "want /ns/"},
		"no node":            {IssueRequest{CSR: csr, ID: id, TTL: time.Hour}, "empty node name"},
		"node mismatch":      {IssueRequest{CSR: csr, ID: NodeID(td, "n1"), Node: "n2", TTL: time.Hour}, "does not match"},
		"no ttl":             {IssueRequest{CSR: csr, ID: id, Node: "n", TTL: 0}, "ttl"},
		"p-384":              {IssueRequest{CSR: csr384, ID: id, Node: "n", TTL: time.Hour}, "P-256"},
		"rsa":                {IssueRequest{CSR: csrRSA, ID: id, Node: "n", TTL: time.Hour}, "P-256"},
		"garbage csr":        {IssueRequest{CSR: []byte("nope"), ID: id, Node: "n", TTL: time.Hour}, "parse csr"},
	} {
		if _, err := ca.Issue(tc.req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
	// The CSR's own SAN is ignored; node IDs default their node; TTL is
	// clamped to the CA's life; extra SANs land in the cert.
	chain, err := ca.Issue(IssueRequest{CSR: csr, ID: NodeID(td, "n1"), TTL: 10 * 365 * 24 * time.Hour,
		DNSNames: []string{"control.hms"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := KeyPair(chain, key)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.URIs[0].String() != NodeID(td, "n1") || !c.Leaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("uri %v not_after %v (ca %v)", c.Leaf.URIs, c.Leaf.NotAfter, ca.Cert.NotAfter)
	}
	if err := c.Leaf.VerifyHostname("control.hms"); err != nil {
		t.Fatal(err)
	}
	if err := c.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if n, _ := NodeOf(c.Leaf); n != "n1" {
		t.Fatalf("node %q", n)
	}
	other, _ := NewKey()
	if _, err := KeyPair(chain, other); err == nil {
		t.Fatal("KeyPair accepted a mismatched key")
	}
}

func TestIntermediateCA(t *testing.T) {
	root := newTestCA(t, td)
	certPEM, keyPEM, _ := newIntermediate(t, root)
	ca, err := LoadCA(td, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Hash() != root.Hash() || len(ca.Chain) != 1 {
		t.Fatalf("intermediate CA hash %s, want root's %s", ca.Hash(), root.Hash())
	}
	c := issue(t, ca, WorkloadID(td, "default", "a"), "node-a")
	if len(c.Certificate) != 2 {
		t.Fatalf("chain has %d certs, want leaf + intermediate", len(c.Certificate))
	}
	// The root bundle alone, as a peer gets it, verifies the chain.
	v := &Verifier{Roots: root.Roots(), TrustDomain: td}
	if _, _, err := v.Verify(c.Certificate); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root.BundlePEM()) {
		t.Fatal("bad bundle")
	}
	if _, _, err := (&Verifier{Roots: pool, TrustDomain: td}).Verify(c.Certificate); err != nil {
		t.Fatal(err)
	}
	// Without the intermediate the leaf does not chain.
	if _, _, err := v.Verify(c.Certificate[:1]); !errors.Is(err, ErrUnknownAuthority) {
		t.Fatalf("leaf alone: %v", err)
	}
}

func TestLoadCARejects(t *testing.T) {
	root := newTestCA(t, td)
	certPEM, keyPEM, _ := newIntermediate(t, root)
	_, otherKeyPEM, _ := newIntermediate(t, root)
	interOnly, _ := parseCertsPEM(certPEM)
	leaf := issue(t, root, WorkloadID(td, "default", "a"), "n")
	leafPEM := append(encodeCert(leaf.Certificate[0]), root.BundlePEM()...)
	leafKey, _ := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	for name, tc := range map[string]struct {
		td, want        string
		certPEM, keyPEM []byte
	}{
		"key mismatch":  {td, "does not match", certPEM, otherKeyPEM},
		"not a ca":      {td, "not a CA", leafPEM, pemBlock("PRIVATE KEY", leafKey)},
		"no root":       {td, "self-signed root", encodeCert(interOnly[0].Raw), keyPEM},
		"no cert":       {td, "no CERTIFICATE", nil, keyPEM},
		"no key":        {td, "no PEM block", certPEM, nil},
		"bad td":        {"Bad", "lowercase", certPEM, keyPEM},
		"wrong root":    {td, "verify ca chain", append(encodeCert(interOnly[0].Raw), newTestCA(t, td).BundlePEM()...), keyPEM},
		"key as a cert": {td, "unexpected PEM block", keyPEM, keyPEM},
	} {
		if _, err := LoadCA(tc.td, tc.certPEM, tc.keyPEM); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestNodeOfRejects(t *testing.T) {
	ca := newTestCA(t, td)
	c := issue(t, ca, WorkloadID(td, "default", "a"), "n")
	c.Leaf.Subject.OrganizationalUnit = nil
	if _, err := NodeOf(c.Leaf); err == nil {
		t.Fatal("NodeOf with no OU succeeded")
	}
	c.Leaf.Subject.OrganizationalUnit = []string{"hms-node:a", "hms-node:b"}
	if _, err := NodeOf(c.Leaf); err == nil {
		t.Fatal("NodeOf with two nodes succeeded")
	}
}
