package mtls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// nodeOUPrefix marks the Subject OrganizationalUnit that names the node a
// certificate was issued to.
const nodeOUPrefix = "hms-node:"

// IssueRequest asks the CA for a leaf certificate.
type IssueRequest struct {
	// CSR is a DER certificate request; only its (ECDSA P-256) public key is
	// certified, its own SANs are ignored.
	CSR []byte
	// ID is the SPIFFE ID to certify; it must be in the CA's trust domain.
	ID string
	// Node is the node the certificate is issued to, embedded so peers can
	// refuse a revoked node's workloads. Required for workload IDs (the
	// control plane's own serving certificate names its replica); defaults
	// to the ID's node for node IDs, and must match it when set.
	Node string
	// TTL is the lifetime wanted, clamped to the CA chain's remaining
	// validity.
	TTL time.Duration
	// DNSNames and IPs are extra SANs, for the control plane's serving cert.
	DNSNames []string
	IPs      []net.IP
}

// Issue signs req and returns the leaf followed by the intermediates
// between it and the root (the root is not included), PEM-encoded.
func (ca *CA) Issue(req IssueRequest) (chainPEM []byte, err error) {
	out, err := ca.issueAt(req, time.Now())
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", req.ID, err)
	}
	return out, nil
}

func (ca *CA) issueAt(req IssueRequest, now time.Time) ([]byte, error) {
	id, err := ParseID(req.ID)
	if err != nil {
		return nil, err
	}
	if id.TrustDomain != ca.TrustDomain {
		return nil, fmt.Errorf("trust domain %q is not the CA's %q", id.TrustDomain, ca.TrustDomain)
	}
	node := req.Node
	if id.IsNode() {
		if node == "" {
			node = id.Node
		} else if node != id.Node {
			return nil, fmt.Errorf("node %q does not match node id %q", node, id.Node)
		}
	}
	if err := checkNodeName(node); err != nil {
		return nil, err
	}
	if req.TTL <= 0 {
		return nil, errors.New("ttl must be positive")
	}
	pub, err := csrKey(req.CSR)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(req.TTL)
	for _, c := range append([]*x509.Certificate{ca.Cert}, ca.Chain...) {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca expired at %s", notAfter.UTC().Format(time.RFC3339))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(req.ID)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization:       []string{ca.TrustDomain},
			OrganizationalUnit: []string{nodeOUPrefix + node},
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              req.DNSNames,
		IPAddresses:           req.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, c := range ca.intermediates() {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes(), nil
}

// intermediates returns the certificates a leaf's chain carries: Cert and
// its issuers, without the root.
func (ca *CA) intermediates() []*x509.Certificate {
	if len(ca.Chain) == 0 {
		return nil
	}
	return append([]*x509.Certificate{ca.Cert}, ca.Chain[:len(ca.Chain)-1]...)
}

// csrKey checks the CSR's signature and returns its P-256 public key.
func csrKey(der []byte) (*ecdsa.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("parse csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("csr key is %T, want ECDSA P-256", csr.PublicKey)
	}
	return pub, nil
}

// NodeOf returns the node a certificate was issued to: the value of its one
// Subject OrganizationalUnit of the form "hms-node:<node>".
func NodeOf(cert *x509.Certificate) (string, error) {
	var node string
	n := 0
	for _, ou := range cert.Subject.OrganizationalUnit {
		if v, ok := strings.CutPrefix(ou, nodeOUPrefix); ok {
			node = v
			n++
		}
	}
	switch n {
	case 0:
		return "", errors.New("certificate names no node")
	case 1:
	default:
		return "", errors.New("certificate names more than one node")
	}
	if err := checkNodeName(node); err != nil {
		return "", fmt.Errorf("certificate node: %w", err)
	}
	return node, nil
}

// KeyPair assembles a tls.Certificate from a chain returned by Issue and
// its private key, with Leaf parsed, checking that they belong together.
func KeyPair(chainPEM []byte, key *ecdsa.PrivateKey) (*tls.Certificate, error) {
	certs, err := parseCertsPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("key pair: %w", err)
	}
	if !publicKeyEqual(certs[0].PublicKey, key.Public()) {
		return nil, errors.New("key pair: certificate does not match the private key")
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, x := range certs {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}
