package mtls

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// clockSkew is how far NotBefore is backdated, so a peer whose clock is a
// little behind still accepts a fresh certificate.
const clockSkew = time.Minute

// NewKey generates an ECDSA P-256 key, the only key type the mesh uses for
// leaves.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate p-256 key: %w", err)
	}
	return k, nil
}

// NewCSR returns a DER certificate request for key carrying id as its only
// URI SAN. The CA decides the certified ID itself; the SAN is informational.
func NewCSR(key *ecdsa.PrivateKey, id string) ([]byte, error) {
	if _, err := ParseID(id); err != nil {
		return nil, fmt.Errorf("new csr: %w", err)
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("new csr: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, fmt.Errorf("new csr: %w", err)
	}
	return der, nil
}

// CA is the mesh certificate authority: either a root it made itself or an
// operator's intermediate with its chain.
type CA struct {
	TrustDomain string
	// Cert signs leaves.
	Cert *x509.Certificate
	// Key is Cert's private key.
	Key crypto.Signer
	// Chain holds Cert's issuers, up to and including the root; empty when
	// Cert is the root itself.
	Chain []*x509.Certificate
}

// NewRootCA creates a self-signed ECDSA P-256 root for trustDomain.
func NewRootCA(trustDomain string, validity time.Duration) (*CA, error) {
	if err := checkTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("new root ca: %w", err)
	}
	if validity <= 0 {
		return nil, errors.New("new root ca: validity must be positive")
	}
	key, err := NewKey()
	if err != nil {
		return nil, fmt.Errorf("new root ca: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("new root ca: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "hms-node root CA"},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new root ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new root ca: %w", err)
	}
	return &CA{TrustDomain: trustDomain, Cert: cert, Key: key}, nil
}

// LoadCA loads an operator's CA: certPEM holds the signing certificate first,
// then its chain up to and including a self-signed root (a root alone is
// accepted too); keyPEM holds the signing certificate's key (PKCS#8, SEC 1 or
// PKCS#1). It checks that the key matches, that the certificate may sign
// certificates, and that the chain verifies now.
func LoadCA(trustDomain string, certPEM, keyPEM []byte) (*CA, error) {
	ca, err := loadCA(trustDomain, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	return ca, nil
}

func loadCA(trustDomain string, certPEM, keyPEM []byte) (*CA, error) {
	if err := checkTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	cert := certs[0]
	if !publicKeyEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("ca key does not match the ca certificate")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA (basic constraints)", cert.Subject)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("certificate %q may not sign certificates (key usage lacks certSign)", cert.Subject)
	}
	ca := &CA{TrustDomain: trustDomain, Cert: cert, Key: key, Chain: certs[1:]}
	root := ca.root()
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("chain does not end in a self-signed root (%q): %w", root.Subject, err)
	}
	inter := x509.NewCertPool()
	for _, c := range ca.Chain {
		inter.AddCert(c)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:         ca.Roots(),
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("verify ca chain: %w", err)
	}
	return ca, nil
}

// root is the self-signed end of the chain.
func (ca *CA) root() *x509.Certificate {
	if len(ca.Chain) == 0 {
		return ca.Cert
	}
	return ca.Chain[len(ca.Chain)-1]
}

// Roots returns a pool holding the root to trust.
func (ca *CA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root())
	return p
}

// BundlePEM returns the root to trust, PEM-encoded.
func (ca *CA) BundlePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root().Raw})
}

// Hash returns "sha256:<hex>" of the root certificate's DER: what join
// tokens pin.
func (ca *CA) Hash() string { return CertHash(ca.root()) }

// CertHash returns "sha256:<hex>" of cert's DER.
func CertHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// chainPEM encodes Cert followed by Chain (the root included).
func (ca *CA) chainPEM() []byte {
	var b bytes.Buffer
	for _, c := range append([]*x509.Certificate{ca.Cert}, ca.Chain...) {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// parseCertsPEM returns every CERTIFICATE block, in order; anything else is
// an error.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(data)) != 0 {
		return nil, errors.New("trailing data after PEM blocks")
	}
	if len(certs) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return certs, nil
}

// parseKeyPEM parses one private key in PKCS#8, SEC 1 or PKCS#1 form.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	return s, nil
}

// publicKeyEqual compares public keys of any standard type.
func publicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}
