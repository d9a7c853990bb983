package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/hms-node/hms-node/pkg/agent/state"
	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// nodeIdentity is this agent's node certificate and the mesh's roots.
type nodeIdentity struct {
	trustDomain string
	bundle      []byte
	roots       *x509.CertPool
	cert        atomic.Pointer[tls.Certificate]
}

func (n *nodeIdentity) getClientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return n.cert.Load(), nil
}

func (a *Agent) identityDir() string { return filepath.Join(a.cfg.StateDir, "identity") }

// loadOrJoin returns the node identity persisted by an earlier run, or
// trades the bootstrap token for one: the token pins the control plane's
// CA by hash on first contact, and works once.
func (a *Agent) loadOrJoin(ctx context.Context) (*nodeIdentity, error) {
	if id, err := a.loadIdentity(); err == nil {
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if a.cfg.TokenFile == "" {
		return nil, fmt.Errorf("this node has no identity yet: pass --token-file with a token from `hms-node token create`")
	}
	raw, err := os.ReadFile(a.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("read join token: %w", err)
	}
	tok, err := mtls.ParseToken(string(raw))
	if err != nil {
		return nil, fmt.Errorf("join token %s: %w", a.cfg.TokenFile, err)
	}
	pinned := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, // verified by the pin below
		VerifyPeerCertificate: mtls.PinnedVerify(tok.CAHash)}
	conn, err := grpc.NewClient(a.cfg.Control, grpc.WithTransportCredentials(credentials.NewTLS(pinned)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	key, err := mtls.NewKey()
	if err != nil {
		return nil, err
	}
	// The CA certifies the node ID itself; the CSR's SAN is informational.
	csr, err := mtls.NewCSR(key, mtls.NodeID("join.invalid", a.cfg.Node))
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := api.NewIdentityClient(conn).Join(cctx, &api.JoinRequest{Token: tok.String(), Node: a.cfg.Node, Csr: csr})
	if err != nil {
		return nil, fmt.Errorf("join the mesh at %s: %w", a.cfg.Control, rpcMessage(err))
	}
	if err := a.saveIdentity(resp.TrustDomain, resp.BundlePem, resp.ChainPem, key); err != nil {
		return nil, err
	}
	a.log.Info("joined the mesh", "control", a.cfg.Control, "trust_domain", resp.TrustDomain)
	return a.loadIdentity()
}

// savedIdentity is the node identity on disk: one file, written
// atomically, so a crash or a renewal racing a hand-over can never pair a
// certificate with another key.
type savedIdentity struct {
	TrustDomain string `json:"trust_domain"`
	Bundle      string `json:"bundle_pem"`
	Chain       string `json:"chain_pem"`
	Key         string `json:"key_pem"`
}

func (a *Agent) saveIdentity(td string, bundle, chain []byte, key *ecdsa.PrivateKey) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return state.Save(a.identityDir(), savedIdentity{TrustDomain: td, Bundle: string(bundle), Chain: string(chain),
		Key: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))})
}

func (a *Agent) loadIdentity() (*nodeIdentity, error) {
	var saved savedIdentity
	found, err := state.Load(a.identityDir(), &saved)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, os.ErrNotExist
	}
	block, _ := pem.Decode([]byte(saved.Key))
	if block == nil {
		return nil, fmt.Errorf("node key in %s: not PEM", a.identityDir())
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("node key in %s: %w", a.identityDir(), err)
	}
	cert, err := mtls.KeyPair([]byte(saved.Chain), key)
	if err != nil {
		return nil, fmt.Errorf("node certificate in %s: %w", a.identityDir(), err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(saved.Bundle)) {
		return nil, fmt.Errorf("mesh roots in %s: no certificate", a.identityDir())
	}
	id := &nodeIdentity{trustDomain: strings.TrimSpace(saved.TrustDomain), bundle: []byte(saved.Bundle), roots: roots}
	id.cert.Store(cert)
	return id, nil
}

// controlTLS is the agent's mTLS to the control plane: its node
// certificate, and the control plane's verified against the mesh roots.
func (a *Agent) controlTLS(id *nodeIdentity) *tls.Config {
	host, _, _ := net.SplitHostPort(a.cfg.Control)
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: id.roots, ServerName: host,
		GetClientCertificate: id.getClientCert, VerifyConnection: mtls.VerifyControlPlane}
}

// renewNodeCert renews the node certificate at half-life, for as long as
// the agent runs.
func (a *Agent) renewNodeCert(ctx context.Context, id *nodeIdentity, ic api.IdentityClient) {
	for {
		leaf := id.cert.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2))
		if wait < time.Second {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		key, err := mtls.NewKey()
		if err != nil {
			continue
		}
		csr, _ := mtls.NewCSR(key, mtls.NodeID(id.trustDomain, a.cfg.Node))
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		resp, err := ic.RenewNode(cctx, &api.RenewNodeRequest{Csr: csr})
		cancel()
		if err != nil {
			a.log.Warn("renew node certificate", "error", rpcMessage(err))
			continue
		}
		cert, err := mtls.KeyPair(resp.ChainPem, key)
		if err != nil {
			a.log.Warn("renewed node certificate", "error", err)
			continue
		}
		id.cert.Store(cert)
		a.saveIdentity(id.trustDomain, id.bundle, resp.ChainPem, key)
		a.log.Info("node certificate renewed", "expires", cert.Leaf.NotAfter)
	}
}

// workloadRotator issues and rotates a pod's workload certificate. The
// first issue waits for the pod's instance to be registered (the CA's
// placement rule), so it retries for a while.
func (a *Agent) startWorkloadIdentity(ctx context.Context, p *pod) {
	if a.ident == nil {
		return
	}
	spiffe := mtls.WorkloadID(a.ident.trustDomain, p.spec.Namespace, p.spec.Service)
	r := &mtls.Rotator{ID: spiffe, Log: a.log,
		Issue: func(ctx context.Context, csr []byte) ([]byte, error) {
			resp, err := a.idClient.IssueWorkload(ctx, &api.IssueWorkloadRequest{Namespace: p.spec.Namespace, Service: p.spec.Service, Csr: csr})
			if err != nil {
				return nil, rpcMessage(err)
			}
			return resp.ChainPem, nil
		},
		OnRotate: func(old, cur *x509.Certificate) {
			if old != nil {
				a.log.Info("workload certificate rotated", "identity", spiffe,
					"old_serial", fmt.Sprintf("%x", old.SerialNumber), "serial", fmt.Sprintf("%x", cur.SerialNumber), "expires", cur.NotAfter)
				p.pool.Retire(func(k poolKey) bool { return k.Src == spiffe }) // new tunnels use the new certificate
			}
		},
	}
	p.identity.Store(r)
	go func() {
		for attempt := 0; ctx.Err() == nil; attempt++ {
			if err := r.Start(ctx); err == nil {
				a.log.Info("workload identity", "identity", spiffe, "expires", r.Leaf().NotAfter)
				a.reportPod(p) // healthy instances were held back until now
				return
			} else if attempt%10 == 9 {
				a.log.Warn("workload certificate not issued yet", "identity", spiffe, "error", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

// reportPod sends the pod's instances to the control plane again.
func (a *Agent) reportPod(p *pod) {
	if a.client == nil || p.removed.Load() {
		return
	}
	a.mu.Lock()
	ins := p.instancesLocked(a.cfg.Node)
	a.mu.Unlock()
	for _, in := range ins {
		a.client.Report(in, false)
	}
}
