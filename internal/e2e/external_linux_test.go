package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// selfSigned writes a certificate for ip and its key, and returns their
// paths; the certificate is its own CA.
func selfSigned(t *testing.T, ip net.IP) (certPath, keyPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "external.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{ip},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certPath, keyPath
}

// An external service gets a mesh name and VIP; the agent forwards to its
// URL and originates TLS for https, so the application speaks plain HTTP.
func TestPrivilegedExternalServiceWithTLSOrigination(t *testing.T) {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	n1 := bed.MustAddNode(t, "n1")
	client, outside := n1.MustAddPod(t, "client"), n1.MustAddPod(t, "outside")
	cert, key := selfSigned(t, outside.IP.AsSlice())
	startServer(t, outside, 8443, testApp, "https", "--addr", ":8443", "--cert", cert, "--key", key, "--body", "outside-the-mesh")

	control := newControl(t)
	a := newAgent(t, n1, append(control.agentFlags(), "--external-ca", cert, "--dns-upstream", startFakeUpstream(t))...)
	a.start()
	a.enroll(client, "client")
	out, err := control.cli("add", "payments", "--external-url", fmt.Sprintf("https://%s:8443", outside.IP))
	if err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	m := &twoNodes{resolv: filepath.Join(t.TempDir(), "resolv.conf")}
	os.WriteFile(m.resolv, []byte("nameserver 192.0.2.53\noptions attempts:1 timeout:2\n"), 0o644)
	waitFor(t, 10*time.Second, "a call to the external service by name", func() bool {
		out, err = m.curlByName(t, client, "http://payments.svc/charge")
		return err == nil
	})
	mustContain(t, out, "outside-the-mesh path=/charge tls=true")
}
