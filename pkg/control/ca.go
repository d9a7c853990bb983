package control

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	mtls "github.com/hms-node/hms-node/pkg/tls"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// rootValidity is the lifetime of a generated root.
	rootValidity = 10 * 365 * 24 * time.Hour
	// adminValidity is the lifetime of the admin credential in admin.yaml.
	adminValidity = 365 * 24 * time.Hour
	// The control plane's own identities (see mtls.SystemNamespace): the
	// admin (CLI) and the API's serving identity, on pseudo-node names that
	// no registered node may take (checkName), so revoking a node can never
	// cut the admin off.
	systemNamespace = mtls.SystemNamespace
	adminService    = mtls.AdminService
	controlService  = mtls.ControlService
	adminNode       = mtls.AdminNode
	controlNode     = mtls.ControlNode
)

// errOtherKEK is the start-up error of a replica whose KEK differs from the
// one that sealed the root in etcd.
var errOtherKEK = errors.New("the CA in etcd is sealed with another key-encryption key; give every replica the same --kek-file")

// loadCA returns the mesh CA: the operator's intermediate when CACert is
// set, else the root in etcd, created (once, by whichever replica wins the
// create-if-absent transaction) when absent.
func (s *Server) loadCA(ctx context.Context, cli *clientv3.Client) (*mtls.CA, error) {
	td := s.cfg.TrustDomain
	if s.cfg.CACert != "" {
		certPEM, err := os.ReadFile(s.cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("read ca cert: %w", err)
		}
		keyPEM, err := os.ReadFile(s.cfg.CAKey)
		if err != nil {
			return nil, fmt.Errorf("read ca key: %w", err)
		}
		return mtls.LoadCA(td, certPEM, keyPEM)
	}
	kek, err := mtls.LoadOrCreateKEK(s.cfg.KEKFile)
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	get, err := cli.Get(octx, caRootKey)
	if err != nil {
		return nil, fmt.Errorf("read the ca from etcd: %w", err)
	}
	if len(get.Kvs) == 0 {
		ca, err := mtls.NewRootCA(td, rootValidity)
		if err != nil {
			return nil, err
		}
		sealed, err := mtls.Seal(kek, ca)
		if err != nil {
			return nil, err
		}
		resp, err := cli.Txn(octx).
			If(clientv3.Compare(clientv3.CreateRevision(caRootKey), "=", 0)).
			Then(clientv3.OpPut(caRootKey, string(sealed))).
			Else(clientv3.OpGet(caRootKey)).Commit()
		if err != nil {
			return nil, fmt.Errorf("store the ca in etcd: %w", err)
		}
		if resp.Succeeded {
			s.log.Info("created the mesh CA root", "trust_domain", td, "hash", ca.Hash(), "kek_id", mtls.KEKID(kek))
			return ca, nil
		}
		get.Kvs = resp.Responses[0].GetResponseRange().Kvs // another replica won
	}
	ca, err := mtls.Unseal(kek, get.Kvs[0].Value, td)
	if err != nil {
		if strings.Contains(err.Error(), "wrong key-encryption key") {
			return nil, fmt.Errorf("%w (%s: kek id %s)", errOtherKEK, s.cfg.KEKFile, mtls.KEKID(kek))
		}
		return nil, fmt.Errorf("the CA in etcd: %w", err)
	}
	return ca, nil
}

// servingRotator keeps the API's serving certificate fresh (renewed at
// half-life). Its chain carries the root too, so an agent joining with a
// token can pin the root by its hash (mtls.PinnedVerify).
func (s *Server) servingRotator(ca *mtls.CA, addr net.Addr) *mtls.Rotator {
	dns, ips := servingNames(addr)
	return &mtls.Rotator{
		ID:  mtls.WorkloadID(ca.TrustDomain, systemNamespace, controlService),
		Log: s.log,
		Issue: func(_ context.Context, csr []byte) ([]byte, error) {
			chain, err := ca.Issue(mtls.IssueRequest{
				CSR: csr, ID: mtls.WorkloadID(ca.TrustDomain, systemNamespace, controlService),
				Node: controlNode, TTL: s.cfg.CertTTL, DNSNames: dns, IPs: ips,
			})
			if err != nil {
				return nil, err
			}
			return append(chain, ca.BundlePEM()...), nil
		},
	}
}

// servingNames are the SANs of the serving certificate: the listen address
// (every interface address when it is unspecified), loopback, localhost and
// the host name.
func servingNames(addr net.Addr) (dns []string, ips []net.IP) {
	dns = []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		dns = append(dns, h)
	}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	host, _, _ := net.SplitHostPort(addr.String())
	ip := net.ParseIP(host)
	switch {
	case ip == nil && host != "":
		dns = append(dns, host)
	case ip != nil && ip.IsUnspecified():
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() {
					ips = append(ips, n.IP)
				}
			}
		}
	case ip != nil && !ip.IsLoopback():
		ips = append(ips, ip)
	}
	return dns, ips
}

// adminCredential issues the admin identity's certificate and key, PEM.
func adminCredential(ca *mtls.CA) (chainPEM, keyPEM []byte, err error) {
	key, err := mtls.NewKey()
	if err != nil {
		return nil, nil, err
	}
	id := mtls.WorkloadID(ca.TrustDomain, systemNamespace, adminService)
	csr, err := mtls.NewCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	chainPEM, err = ca.Issue(mtls.IssueRequest{CSR: csr, ID: id, Node: adminNode, TTL: adminValidity})
	if err != nil {
		return nil, nil, err
	}
	return chainPEM, encodeKey(key), nil
}

func encodeKey(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
