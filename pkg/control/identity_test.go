package control

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// wantCode checks err's code and that its message contains hint.
func wantCode(t *testing.T, what string, err error, code codes.Code, hint string) {
	t.Helper()
	if st, _ := status.FromError(err); st.Code() != code || !strings.Contains(st.Message(), hint) {
		t.Fatalf("%s: %v, want %s containing %q", what, err, code, hint)
	}
}

// workloadCSR is a fresh key's CSR for ns/svc.
func workloadCSR(t *testing.T, ns, svc string) []byte {
	t.Helper()
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := mtls.NewCSR(key, mtls.WorkloadID(DefaultTrustDomain, ns, svc))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func leafOf(t *testing.T, chainPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(chainPEM)
	if b == nil {
		t.Fatalf("no PEM in chain %q", chainPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAPIRefusesWrongCallers(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	n1 := joinNode(t, s, "n1")
	// No client certificate: the TLS layer lets it in (Join needs none),
	// the interceptor refuses a Registry call.
	tc, err := JoinTLS(createToken(t, s, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	anon := dialTLS(t, s.Addr(), tc)
	_, err = api.NewRegistryClient(anon).List(ctxT(t, 5*time.Second), &api.ListRequest{})
	wantCode(t, "list without a certificate", err, codes.Unauthenticated, "admin")
	_, err = api.NewIdentityClient(anon).IssueWorkload(ctxT(t, 5*time.Second), &api.IssueWorkloadRequest{Service: "web"})
	wantCode(t, "issue workload without a certificate", err, codes.Unauthenticated, "node certificate")
	// A node certificate is no admin.
	_, err = n1.registry.List(ctxT(t, 5*time.Second), &api.ListRequest{})
	wantCode(t, "list as a node", err, codes.PermissionDenied, "needs the admin identity")
	_, err = n1.identity.CreateToken(ctxT(t, 5*time.Second), &api.CreateTokenRequest{})
	wantCode(t, "create token as a node", err, codes.PermissionDenied, "needs the admin identity")
	_, err = n1.identity.RevokeNode(ctxT(t, 5*time.Second), &api.RevokeNodeRequest{Node: "n2"})
	wantCode(t, "revoke as a node", err, codes.PermissionDenied, "needs the admin identity")
	// And the admin is no node.
	stream, err := api.NewAgentsClient(adminConn(t, s)).Connect(ctxT(t, 5*time.Second))
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, "connect as the admin", err, codes.PermissionDenied, "needs a node identity")
}

func TestJoinWithToken(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	tok := createToken(t, s, time.Minute)
	r, kp, err := join(t, s, tok, "n1")
	if err != nil {
		t.Fatal(err)
	}
	leaf := kp.Leaf
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != mtls.NodeID(DefaultTrustDomain, "n1") {
		t.Fatalf("node cert URIs %v", leaf.URIs)
	}
	if node, err := mtls.NodeOf(leaf); err != nil || node != "n1" {
		t.Fatalf("node cert names node %q (%v)", node, err)
	}
	if r.TrustDomain != DefaultTrustDomain {
		t.Fatalf("trust domain %q", r.TrustDomain)
	}
	if d := time.Until(leaf.NotAfter); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("node cert lives %s, want the 24h cert ttl", d)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(r.BundlePem)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("node cert does not chain to the bundle: %v", err)
	}
	_, _, err = join(t, s, tok, "n2")
	wantCode(t, "join with a used token", err, codes.Unauthenticated, "token already used or expired")

	short := createToken(t, s, 300*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	_, _, err = join(t, s, short, "n3")
	wantCode(t, "join with an expired token", err, codes.Unauthenticated, "token already used or expired")

	// The node renews its own certificate.
	n := nodeWithCert(t, s, "n1", r.BundlePem, kp)
	key, _ := mtls.NewKey()
	csr, _ := mtls.NewCSR(key, mtls.NodeID(DefaultTrustDomain, "n1"))
	rr, err := n.identity.RenewNode(ctxT(t, 5*time.Second), &api.RenewNodeRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	if got := leafOf(t, rr.ChainPem); got.URIs[0].String() != leaf.URIs[0].String() || got.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatalf("renewed cert %v serial %x", got.URIs, got.SerialNumber)
	}
}

func TestConnectNeedsTheHelloNodesCert(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	n1 := joinNode(t, s, "n1")
	stream, err := n1.agents.Connect(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&api.AgentMessage{Msg: &api.AgentMessage_Hello{Hello: hello("n2", 0)}})
	_, err = stream.Recv()
	wantCode(t, "hello n2 with n1's cert", err, codes.PermissionDenied, `certificate is node "n1"'s`)
}

func TestIssueWorkloadPlacement(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	n1 := joinNode(t, s, "n1")
	issue := func(svc string) (*api.IssueWorkloadResponse, error) {
		return n1.identity.IssueWorkload(ctxT(t, 5*time.Second),
			&api.IssueWorkloadRequest{Namespace: "default", Service: svc, Csr: workloadCSR(t, "default", svc)})
	}
	_, err := issue("web")
	wantCode(t, "issue without an instance", err, codes.PermissionDenied, "node n1 has no instance of default/web")

	web := svc("web", 80)
	web.Placement = &api.Placement{Nodes: []string{"n2"}}
	apply(t, reg, web)
	a := connectAgent(t, n1.agents, hello("n1", 0, inst("web", "pod-1", "10.1.0.1"),
		&api.Instance{Service: "job", Workload: "pod-2", Ip: "10.1.0.2"})) // client-only: port 0, no service
	a.next(5 * time.Second)
	_, err = issue("web")
	wantCode(t, "issue against placement", err, codes.PermissionDenied, "placement of default/web does not admit node n1")

	web.Placement.Nodes = []string{"n2", "n1"}
	apply(t, reg, web)
	for _, name := range []string{"web", "job"} {
		r, err := issue(name)
		if err != nil {
			t.Fatalf("issue %s: %v", name, err)
		}
		leaf := leafOf(t, r.ChainPem)
		if leaf.URIs[0].String() != mtls.WorkloadID(DefaultTrustDomain, "default", name) {
			t.Fatalf("workload cert URIs %v", leaf.URIs)
		}
		if node, err := mtls.NodeOf(leaf); err != nil || node != "n1" {
			t.Fatalf("workload cert names node %q (%v)", node, err)
		}
	}
}

func TestRevokeNode(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, id := dial(t, s)
	n1, n2 := joinNode(t, s, "n1"), joinNode(t, s, "n2")
	a1 := connectAgent(t, n1.agents, hello("n1", 0, inst("web", "pod-1", "10.1.0.1")))
	a1.next(5 * time.Second)
	a2 := connectAgent(t, n2.agents, hello("n2", 0))
	a2.next(5 * time.Second)
	if n := instanceCount(t, reg, "n1"); n != 1 {
		t.Fatalf("%d instances of n1 before revocation", n)
	}

	start := time.Now()
	if _, err := id.RevokeNode(ctxT(t, 5*time.Second), &api.RevokeNodeRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	for ended := false; !ended; { // drain until the stream ends
		select {
		case _, ok := <-a1.msgs:
			ended = !ok
		case <-time.After(2 * time.Second):
			t.Fatal("revoked node's stream still open after 2s")
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("revoked node's stream ended after %s, want within 1s", took)
	}
	wantCode(t, "revoked node's stream", a1.err, codes.PermissionDenied, "node n1 is revoked")
	if n := instanceCount(t, reg, "n1"); n != 0 {
		t.Fatalf("%d instances of n1 listed after revocation", n)
	}
	for _, nd := range list(t, reg).Nodes {
		if nd.Name == "n1" {
			t.Fatal("n1 still listed as a node")
		}
	}
	a2.waitDelta(time.Second, func(d *api.Delta) bool {
		for _, c := range d.Changes {
			if c.Key == "revocations/n1" && c.GetRevocation().GetNode() == "n1" {
				return true
			}
		}
		return false
	})

	_, _, err := join(t, s, createToken(t, s, time.Minute), "n1")
	wantCode(t, "join of a revoked node", err, codes.PermissionDenied, "node n1 is revoked")
	stream, err := n1.agents.Connect(ctxT(t, 5*time.Second))
	if err == nil {
		stream.Send(&api.AgentMessage{Msg: &api.AgentMessage_Hello{Hello: hello("n1", 0)}})
		_, err = stream.Recv()
	}
	wantCode(t, "connect of a revoked node", err, codes.PermissionDenied, "node n1 is revoked")
	_, err = n1.identity.IssueWorkload(ctxT(t, 5*time.Second),
		&api.IssueWorkloadRequest{Service: "web", Csr: workloadCSR(t, "default", "web")})
	wantCode(t, "issue workload to a revoked node", err, codes.PermissionDenied, "node n1 is revoked")

	a3 := connectAgent(t, joinNode(t, s, "n3").agents, hello("n3", 0))
	snap := a3.next(5 * time.Second).GetSnapshot()
	if len(snap.GetRevocations()) != 1 || snap.Revocations[0].Node != "n1" || snap.Revocations[0].RevokedUnix == 0 {
		t.Fatalf("snapshot revocations %v, want n1", snap.GetRevocations())
	}
	if len(snap.GetNodes()) != 2 {
		t.Fatalf("snapshot nodes %v, want n2 and n3", snap.GetNodes())
	}
}

func TestReplicasShareOneRoot(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s1, _ := startServer(t, cfg)
	cfg2 := testConfig(t)
	cfg2.EtcdEndpoints = []string{"http://127.0.0.1:" + itoa(cfg.EtcdClientPort)}
	cfg2.KEKFile = filepath.Join(cfg.DataDir, "kek")
	s2, _ := startServer(t, cfg2)
	bundle := func(s *Server) string {
		ac, err := LoadAdminConfig(filepath.Join(s.cfg.DataDir, "admin.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		return ac.CA
	}
	if bundle(s1) != bundle(s2) {
		t.Fatal("two replicas with one KEK have different roots")
	}
	// A node joined at one replica is trusted by the other.
	r, kp, err := join(t, s1, createToken(t, s2, time.Minute), "n1")
	if err != nil {
		t.Fatalf("token of replica 2 at replica 1: %v", err)
	}
	n := nodeWithCert(t, s2, "n1", r.BundlePem, kp)
	a := connectAgent(t, n.agents, hello("n1", 0))
	a.next(5 * time.Second)
	// A revocation at replica 1 ends the node's stream at replica 2.
	_, id1 := dial(t, s1)
	if _, err := id1.RevokeNode(ctxT(t, 5*time.Second), &api.RevokeNodeRequest{Node: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "the stream at the other replica ends", func() bool {
		select {
		case _, ok := <-a.msgs:
			return !ok
		default:
			return false
		}
	})
	wantCode(t, "stream at the other replica", a.err, codes.PermissionDenied, "node n1 is revoked")

	cfg3 := testConfig(t)
	cfg3.EtcdEndpoints = cfg2.EtcdEndpoints
	s3, err := New(cfg3)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = s3.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "the CA in etcd is sealed with another key-encryption key; give every replica the same --kek-file") {
		t.Fatalf("replica with another KEK: %v", err)
	}
	t.Logf("replica with another KEK: %v", err)
}

func TestOperatorIntermediate(t *testing.T) {
	t.Parallel()
	root, err := mtls.NewRootCA(DefaultTrustDomain, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := mtls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "operator intermediate"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.CACert, cfg.CAKey = filepath.Join(cfg.DataDir, "ca.pem"), filepath.Join(cfg.DataDir, "ca-key.pem")
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), root.BundlePEM()...)
	if err := os.WriteFile(cfg.CACert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.CAKey, encodeKey(key), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := startServer(t, cfg)
	r, kp, err := join(t, s, createToken(t, s, time.Minute), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if string(r.BundlePem) != string(root.BundlePEM()) {
		t.Fatal("bundle is not the operator's root")
	}
	inter := x509.NewCertPool()
	for _, c := range kp.Certificate[1:] {
		ic, _ := x509.ParseCertificate(c)
		inter.AddCert(ic)
	}
	if _, err := kp.Leaf.Verify(x509.VerifyOptions{Roots: root.Roots(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("node cert does not chain to the operator's root: %v", err)
	}
	if kp.Leaf.Issuer.CommonName != "operator intermediate" {
		t.Fatalf("node cert issued by %q", kp.Leaf.Issuer)
	}
	reg, _ := dial(t, s) // the admin credential works through the intermediate too
	list(t, reg)
}
