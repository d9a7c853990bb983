package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// alpnH2 is HBONE's application protocol: HTTP/2 CONNECT.
var alpnH2 = []string{"h2"}

// ServerConfig returns a TLS 1.3-only server config that requires a client
// certificate, verifies it with v, then asks authorize (nil: allow every
// verified peer). getCert is called per handshake, so rotation needs no new
// config. Session tickets are off, so every connection is verified afresh
// (and a revoked node cannot resume).
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), v *Verifier, authorize func(ID, *x509.Certificate) error) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		GetCertificate:         getCert,
		ClientAuth:             tls.RequireAnyClientCert,
		SessionTicketsDisabled: true,
		NextProtos:             alpnH2,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, cert, err := v.Verify(raw)
			if err != nil {
				return fmt.Errorf("verify client: %w", err)
			}
			if authorize != nil {
				if err := authorize(id, cert); err != nil {
					return fmt.Errorf("authorize %s: %w: %w", id, ErrUnauthorizedPeer, err)
				}
			}
			return nil
		},
	}
}

// ClientConfig returns a TLS 1.3-only client config that presents
// getCert's certificate and verifies the server with v, then with expect
// (e.g. that it is the destination's identity; nil: any verified peer).
// Go's own verification is skipped because it cannot check SPIFFE SANs; v
// does the chain checks instead.
func ClientConfig(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error), v *Verifier, expect func(ID) error) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: getCert,
		InsecureSkipVerify:   true, // replaced by VerifyPeerCertificate below
		NextProtos:           alpnH2,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := v.Verify(raw)
			if err != nil {
				return fmt.Errorf("verify server: %w", err)
			}
			if expect != nil {
				if err := expect(id); err != nil {
					return fmt.Errorf("server %s: %w: %w", id, ErrUnauthorizedPeer, err)
				}
			}
			return nil
		},
	}
}

// ExpectID returns an expect hook for ClientConfig that accepts only want.
func ExpectID(want string) func(ID) error {
	return func(got ID) error {
		if got.String() != want {
			return fmt.Errorf("got identity %s, want %s", got, want)
		}
		return nil
	}
}

// StaticCertificate adapts a fixed certificate to the GetCertificate hook.
func StaticCertificate(c *tls.Certificate) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c, nil }
}

// StaticClientCertificate adapts a fixed certificate to the
// GetClientCertificate hook.
func StaticClientCertificate(c *tls.Certificate) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
}
