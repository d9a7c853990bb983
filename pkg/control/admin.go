package control

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	mtls "github.com/hms-node/hms-node/pkg/tls"
	"gopkg.in/yaml.v3"
)

// AdminConfig is the CLI's client config, as the control plane writes it to
// <data-dir>/admin.yaml: where the API is, the CA bundle to verify it with,
// and the admin identity's certificate and key (PEM block scalars).
type AdminConfig struct {
	// Control is the API address, host:port.
	Control string `yaml:"control"`
	// CA is the mesh's root bundle, PEM.
	CA string `yaml:"ca,omitempty"`
	// Cert is the admin certificate chain (leaf first), PEM; its identity
	// is spiffe://<trust-domain>/ns/hms-system/sa/admin.
	Cert string `yaml:"cert,omitempty"`
	// Key is Cert's private key, PEM.
	Key string `yaml:"key,omitempty"`
}

// LoadAdminConfig reads an admin.yaml.
func LoadAdminConfig(path string) (*AdminConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client config: %w", err)
	}
	c := &AdminConfig{}
	if err := yaml.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	if c.Control == "" {
		return nil, fmt.Errorf("client config %s: no control address", path)
	}
	return c, nil
}

// TLS is the CLI's mTLS config: it presents the admin certificate and
// verifies the control plane's certificate against the bundle and the name
// or IP dialed (gRPC sets ServerName from the dial target; other callers
// must set it).
func (c *AdminConfig) TLS() (*tls.Config, error) {
	if c.CA == "" || c.Cert == "" || c.Key == "" {
		return nil, errors.New("client config has no ca, cert or key (written by an older control plane?); restart the control plane to rewrite it")
	}
	cert, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, fmt.Errorf("client config: admin credential: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, errors.New("client config: ca holds no PEM certificate")
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		RootCAs:          roots,
		Certificates:     []tls.Certificate{cert},
		VerifyConnection: verifyControlID,
	}, nil
}

// AgentTLS is an agent's mTLS config to the control plane: it presents
// getCert's node certificate and verifies the control plane's certificate
// against bundlePEM (the JoinResponse's bundle) and the name or IP dialed,
// as TLS does for AdminConfig.
func AgentTLS(bundlePEM []byte, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundlePEM) // an empty pool refuses every server
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              roots,
		GetClientCertificate: getCert,
		VerifyConnection:     verifyControlID,
	}
}

// JoinTLS is the config of an agent's first contact, the Join call: no
// client certificate, and the control plane's CA pinned by the hash the
// token carries instead of a bundle the agent does not have yet.
func JoinTLS(token string) (*tls.Config, error) {
	tok, err := mtls.ParseToken(token)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		InsecureSkipVerify:    true, // replaced by the pin
		VerifyPeerCertificate: mtls.PinnedVerify(tok.CAHash),
		// The pin proves the mesh's CA, not that the server is the control
		// plane: any node holds a certificate of that CA.
		VerifyConnection: verifyControlID,
	}, nil
}

// verifyControlID checks, after the chain and name checks, that the server
// holds the control plane's identity (not merely some certificate of the
// mesh CA).
var verifyControlID = mtls.VerifyControlPlane

// writeAdminConfig writes <dataDir>/admin.yaml (mode 0600), the CLI's way
// to the API. An unspecified listen address is written as loopback.
func writeAdminConfig(dataDir string, addr net.Addr, c AdminConfig) error {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	c.Control = net.JoinHostPort(host, port)
	body, err := yaml.Marshal(&c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dataDir, ".admin.yaml.*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dataDir, "admin.yaml"))
}
