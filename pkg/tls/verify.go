package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors a Verifier wraps, so callers can count refusals by reason.
var (
	ErrNoCertificate     = errors.New("no certificate")
	ErrUnknownAuthority  = errors.New("unknown authority")
	ErrExpired           = errors.New("certificate expired")
	ErrNotYetValid       = errors.New("certificate not yet valid")
	ErrRevoked           = errors.New("revoked node")
	ErrWrongTrustDomain  = errors.New("wrong trust domain")
	ErrBadIdentity       = errors.New("bad identity")
	ErrPinMismatch       = errors.New("ca hash mismatch")
	ErrUnauthorizedPeer  = errors.New("peer not authorized")
	errMalformedPeerCert = errors.New("malformed certificate")
)

// Verifier checks a peer's certificate chain; both the client and the
// server side use it.
type Verifier struct {
	// Roots are the CA roots to trust.
	Roots *x509.CertPool
	// TrustDomain is the only trust domain accepted.
	TrustDomain string
	// Revoked reports whether a node is revoked; nil means none is. It is
	// called on every handshake, so it must be fast and safe for concurrent
	// use.
	Revoked func(node string) bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Verify checks rawCerts (leaf first, then any intermediates): the chain
// leads to Roots, the leaf is in its validity period and not a CA, it has
// exactly one SPIFFE URI SAN, in TrustDomain, it names its node, and neither
// that node nor (for node certificates) the node in its ID is revoked.
// Errors wrap ErrNoCertificate, ErrUnknownAuthority, ErrExpired,
// ErrNotYetValid, ErrRevoked, ErrWrongTrustDomain or ErrBadIdentity.
func (v *Verifier) Verify(rawCerts [][]byte) (ID, *x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return ID{}, nil, fmt.Errorf("%w presented", ErrNoCertificate)
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return ID{}, nil, fmt.Errorf("%w: %v", errMalformedPeerCert, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	if now.After(leaf.NotAfter) {
		return ID{}, nil, fmt.Errorf("%w at %s (serial %x)", ErrExpired, leaf.NotAfter.UTC().Format(time.RFC3339), leaf.SerialNumber)
	}
	if now.Before(leaf.NotBefore) {
		return ID{}, nil, fmt.Errorf("%w until %s", ErrNotYetValid, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return ID{}, nil, classifyChainError(err)
	}
	if leaf.IsCA {
		return ID{}, nil, fmt.Errorf("%w: peer certificate is a CA", ErrBadIdentity)
	}
	id, err := idOf(leaf)
	if err != nil {
		return ID{}, nil, err
	}
	if id.TrustDomain != v.TrustDomain {
		return ID{}, nil, fmt.Errorf("%w: %s is not in %q", ErrWrongTrustDomain, id, v.TrustDomain)
	}
	node, err := NodeOf(leaf)
	if err != nil {
		return ID{}, nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if id.IsNode() && id.Node != node {
		return ID{}, nil, fmt.Errorf("%w: node certificate %s issued to node %q", ErrBadIdentity, id, node)
	}
	// For node certificates id.Node == node (checked above), so this one
	// check covers both the issued-to node and the ID's node.
	if v.Revoked != nil {
		if v.Revoked(node) {
			return ID{}, nil, fmt.Errorf("%w %s (certificate %s)", ErrRevoked, node, id)
		}
	}
	return id, leaf, nil
}

// classifyChainError maps x509's chain errors onto the package's reasons.
func classifyChainError(err error) error {
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return fmt.Errorf("%w: certificate not signed by the mesh CA: %v", ErrUnknownAuthority, err)
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) && ci.Reason == x509.Expired {
		return fmt.Errorf("%w: %v", ErrExpired, err)
	}
	return fmt.Errorf("%w: %v", ErrUnknownAuthority, err)
}

// idOf returns the one SPIFFE ID a leaf certifies.
func idOf(leaf *x509.Certificate) (ID, error) {
	if len(leaf.URIs) != 1 {
		return ID{}, fmt.Errorf("%w: certificate has %d URI SANs, want exactly one SPIFFE ID", ErrBadIdentity, len(leaf.URIs))
	}
	id, err := ParseID(leaf.URIs[0].String())
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	return id, nil
}

// PeerID returns the SPIFFE ID of a connection's peer, as verified during
// the handshake by a config from this package.
func PeerID(cs tls.ConnectionState) (ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ID{}, fmt.Errorf("peer id: %w presented", ErrNoCertificate)
	}
	id, err := idOf(cs.PeerCertificates[0])
	if err != nil {
		return ID{}, fmt.Errorf("peer id: %w", err)
	}
	return id, nil
}

// PinnedVerify returns a VerifyPeerCertificate hook for first contact: the
// presented chain must contain a self-signed root whose Hash matches caHash
// ("sha256:<hex>" or bare hex), and the leaf must chain to it (or be that
// root). A control plane therefore serves its chain with the root appended
// (append chainPEM and CA.BundlePEM). Use it with InsecureSkipVerify: the
// pin replaces the system roots.
func PinnedVerify(caHash string) func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	want := "sha256:" + strings.ToLower(strings.TrimPrefix(strings.TrimSpace(caHash), "sha256:"))
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return fmt.Errorf("pinned verify: %w presented", ErrNoCertificate)
		}
		certs := make([]*x509.Certificate, len(rawCerts))
		var root *x509.Certificate
		for i, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("pinned verify: %w: %v", errMalformedPeerCert, err)
			}
			certs[i] = c
			if root == nil && c.IsCA && CertHash(c) == want && c.CheckSignatureFrom(c) == nil {
				root = c
			}
		}
		if root == nil {
			return fmt.Errorf("pinned verify: %w: no self-signed root with hash %s in the presented chain", ErrPinMismatch, want)
		}
		if certs[0] == root {
			return nil
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(root)
		for _, c := range certs[1:] {
			if c != root {
				inter.AddCert(c)
			}
		}
		_, err := certs[0].Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("pinned verify: %w", classifyChainError(err))
		}
		return nil
	}
}
