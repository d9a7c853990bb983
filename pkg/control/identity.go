package control

import (
	"context"
	"crypto/x509"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// defaultTokenTTL is a bootstrap token's lifetime when the request names none.
const defaultTokenTTL = time.Hour

// identityService implements api.IdentityServer: the mesh CA's API.
type identityService struct {
	api.UnimplementedIdentityServer
	st      *store
	ca      *mtls.CA
	ttl     time.Duration // CertTTL
	revoked *revocations
	log     *slog.Logger
}

// CreateToken stores a new token's secret hash under a lease of its ttl.
func (s *identityService) CreateToken(ctx context.Context, req *api.CreateTokenRequest) (*api.CreateTokenResponse, error) {
	ttl := time.Duration(req.GetTtlMs()) * time.Millisecond
	if ttl == 0 {
		ttl = defaultTokenTTL
	}
	if ttl < 0 {
		return nil, status.Error(codes.InvalidArgument, "create token: ttl must be positive")
	}
	tok, err := mtls.NewToken(s.ca.Hash())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "create token: %v", err)
	}
	expires := time.Now().Add(ttl)
	octx, cancel := s.st.opCtx(ctx)
	defer cancel()
	// etcd's TTL is whole seconds (and has a floor); the expiry in the value
	// is exact, the lease only cleans up.
	lease, err := s.st.cli.Grant(octx, int64((ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, storeErr(ctx, err, true)
	}
	val := mtls.HashSecret(tok.Secret) + " " + strconv.FormatInt(expires.UnixMilli(), 10)
	if _, err := s.st.cli.Put(octx, tokenKey(tok.ID), val, clientv3.WithLease(lease.ID)); err != nil {
		return nil, storeErr(ctx, err, true)
	}
	s.log.Info("created a join token", "id", tok.ID, "expires", expires.UTC().Format(time.RFC3339))
	return &api.CreateTokenResponse{Token: tok.String(), ExpiresUnix: expires.Unix()}, nil
}

var errTokenUsed = status.Error(codes.Unauthenticated, "token already used or expired")

// Join spends a token (once: its key is deleted by the transaction that
// checks it is still there) on a node certificate.
func (s *identityService) Join(ctx context.Context, req *api.JoinRequest) (*api.JoinResponse, error) {
	tok, err := mtls.ParseToken(req.GetToken())
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "join: %v", err)
	}
	if tok.CAHash != s.ca.Hash() {
		return nil, status.Error(codes.Unauthenticated, "join: the token is for another CA")
	}
	node := req.GetNode()
	if err := checkName("node name", node); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "join: %v", err)
	}
	if s.revoked.has(node) {
		return nil, status.Errorf(codes.PermissionDenied, "join: node %s is revoked", node)
	}
	octx, cancel := s.st.opCtx(ctx)
	defer cancel()
	key := tokenKey(tok.ID)
	get, err := s.st.cli.Get(octx, key)
	if err != nil {
		return nil, storeErr(ctx, err, false)
	}
	if len(get.Kvs) == 0 {
		return nil, errTokenUsed
	}
	hash, exp, _ := strings.Cut(string(get.Kvs[0].Value), " ")
	if !mtls.CheckSecret(hash, tok.Secret) {
		return nil, status.Error(codes.Unauthenticated, "join: token secret does not match")
	}
	if ms, err := strconv.ParseInt(exp, 10, 64); err != nil || time.Now().After(time.UnixMilli(ms)) {
		return nil, errTokenUsed
	}
	// Check the CSR before the token is spent: a malformed one must not
	// burn it.
	if _, err := x509.ParseCertificateRequest(req.GetCsr()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "join: certificate request: %v", err)
	}
	resp, err := s.st.cli.Txn(octx).If(
		clientv3.Compare(clientv3.ModRevision(key), "=", get.Kvs[0].ModRevision),
		clientv3.Compare(clientv3.CreateRevision(revocationKey(node)), "=", 0),
		// A token must not take over the name of a node that is connected
		// now (it would get that node's workload identities).
		clientv3.Compare(clientv3.CreateRevision(nodeKey(node)), "=", 0),
	).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return nil, storeErr(ctx, err, true)
	}
	if !resp.Succeeded {
		if s.revokedInStore(ctx, node) {
			return nil, status.Errorf(codes.PermissionDenied, "join: node %s is revoked", node)
		}
		if live, _ := s.st.cli.Get(octx, nodeKey(node), clientv3.WithCountOnly()); live != nil && live.Count > 0 {
			return nil, status.Errorf(codes.AlreadyExists, "join: a node named %s is connected; pick another --node", node)
		}
		return nil, errTokenUsed
	}
	if lease := clientv3.LeaseID(get.Kvs[0].Lease); lease != 0 {
		s.st.cli.Revoke(octx, lease) // the spent token's lease has nothing left to guard
	}
	chain, err := s.issueNode(node, req.GetCsr())
	if err != nil {
		return nil, err
	}
	s.log.Info("node joined", "node", node, "token", tok.ID)
	return &api.JoinResponse{ChainPem: chain, BundlePem: s.ca.BundlePEM(), TrustDomain: s.ca.TrustDomain}, nil
}

// revokedInStore reads the revocation key (for the reason of a failed
// transaction; errors count as not revoked).
func (s *identityService) revokedInStore(ctx context.Context, node string) bool {
	octx, cancel := s.st.opCtx(ctx)
	defer cancel()
	r, err := s.st.cli.Get(octx, revocationKey(node), clientv3.WithCountOnly())
	return err == nil && r.Count > 0
}

func (s *identityService) issueNode(node string, csr []byte) ([]byte, error) {
	chain, err := s.ca.Issue(mtls.IssueRequest{CSR: csr, ID: mtls.NodeID(s.ca.TrustDomain, node), Node: node, TTL: s.ttl})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", oneLine(err.Error()))
	}
	return chain, nil
}

// RenewNode issues a fresh certificate to the calling node.
func (s *identityService) RenewNode(ctx context.Context, req *api.RenewNodeRequest) (*api.RenewNodeResponse, error) {
	c, err := nodeCaller(ctx)
	if err != nil {
		return nil, err
	}
	if s.revokedInStore(ctx, c.node) {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is revoked", c.node)
	}
	chain, err := s.issueNode(c.node, req.GetCsr())
	if err != nil {
		return nil, err
	}
	return &api.RenewNodeResponse{ChainPem: chain}, nil
}

// IssueWorkload issues a workload identity to the calling node, if the
// placement rule (DESIGN §4) allows: the node has registered an instance of
// the service, and the service's placement.nodes (when it exists) admits
// the node.
func (s *identityService) IssueWorkload(ctx context.Context, req *api.IssueWorkloadRequest) (*api.IssueWorkloadResponse, error) {
	c, err := nodeCaller(ctx)
	if err != nil {
		return nil, err
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = defaultNamespace
	}
	if err := checkName("namespace", ns); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "issue workload: %v", err)
	}
	if err := checkName("service", req.GetService()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "issue workload: %v", err)
	}
	if ns == systemNamespace {
		// The admin's and the control plane's identities live there.
		return nil, status.Errorf(codes.PermissionDenied, "namespace %s is reserved for the control plane", systemNamespace)
	}
	svc := req.GetService()
	octx, cancel := s.st.opCtx(ctx)
	defer cancel()
	resp, err := s.st.cli.Txn(octx).Then(
		clientv3.OpGet(kindPrefix(kindInstance)+ns+"/"+svc+"/"+c.node+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(serviceKey(ns, svc)),
		clientv3.OpGet(revocationKey(c.node), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return nil, storeErr(ctx, err, false)
	}
	if resp.Responses[2].GetResponseRange().Count > 0 {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is revoked", c.node)
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "node %s has no instance of %s/%s", c.node, ns, svc)
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		m := &api.Service{}
		if err := proto.Unmarshal(kvs[0].Value, m); err != nil {
			return nil, status.Errorf(codes.Internal, "decode service %s/%s: %v", ns, svc, err)
		}
		if !placementAdmits(m.GetPlacement().GetNodes(), c.node) {
			return nil, status.Errorf(codes.PermissionDenied, "placement of %s/%s does not admit node %s", ns, svc, c.node)
		}
	}
	chain, err := s.ca.Issue(mtls.IssueRequest{CSR: req.GetCsr(), ID: mtls.WorkloadID(s.ca.TrustDomain, ns, svc), Node: c.node, TTL: s.ttl})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", oneLine(err.Error()))
	}
	return &api.IssueWorkloadResponse{ChainPem: chain}, nil
}

// placementAdmits applies placement.nodes: exact names or "*"; empty is "*".
func placementAdmits(nodes []string, node string) bool {
	return len(nodes) == 0 || slices.Contains(nodes, "*") || slices.Contains(nodes, node)
}

// nodeCaller is the calling node (the interceptor checked the role).
func nodeCaller(ctx context.Context) (*caller, error) {
	c, err := callerOf(ctx)
	if err != nil || c == nil || !c.id.IsNode() {
		return nil, status.Error(codes.Unauthenticated, "this call needs a node certificate")
	}
	return c, nil
}

// nodeOfInstanceKey returns the node segment of an instances/ key.
func nodeOfInstanceKey(key string) string {
	parts := strings.Split(strings.TrimPrefix(key, kindPrefix(kindInstance)), "/")
	if len(parts) < 4 {
		return ""
	}
	return parts[2]
}

// RevokeNode cuts a node off: a permanent revocation key, its instances and
// node key deleted (and their leases revoked, so nothing the node's streams
// put under them lingers); every replica ends the node's streams when the
// revocation reaches its watch.
func (s *identityService) RevokeNode(ctx context.Context, req *api.RevokeNodeRequest) (*api.RevokeNodeResponse, error) {
	node := req.GetNode()
	if err := checkName("node name", node); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "revoke: %v", err)
	}
	val, err := proto.Marshal(&api.Revocation{Node: node, RevokedUnix: time.Now().Unix()})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "revoke: %v", err)
	}
	octx, cancel := s.st.opCtx(ctx)
	defer cancel()
	get, err := s.st.cli.Txn(octx).Then(
		clientv3.OpGet(kindPrefix(kindInstance), clientv3.WithPrefix()),
		clientv3.OpGet(nodeKey(node)),
	).Commit()
	if err != nil {
		return nil, storeErr(ctx, err, true)
	}
	ops := []clientv3.Op{clientv3.OpPut(revocationKey(node), string(val)), clientv3.OpDelete(nodeKey(node))}
	leases := map[clientv3.LeaseID]bool{}
	for _, kv := range get.Responses[0].GetResponseRange().Kvs {
		if nodeOfInstanceKey(string(kv.Key)) == node {
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			leases[clientv3.LeaseID(kv.Lease)] = true
		}
	}
	for _, kv := range get.Responses[1].GetResponseRange().Kvs {
		leases[clientv3.LeaseID(kv.Lease)] = true
	}
	for len(ops) > 0 { // within etcd's default --max-txn-ops
		n := min(len(ops), putChunk)
		if _, err := s.st.cli.Txn(octx).Then(ops[:n]...).Commit(); err != nil {
			return nil, storeErr(ctx, err, true)
		}
		ops = ops[n:]
	}
	s.revoked.set(node, true) // this replica at once; the others via the watch
	for id := range leases {
		if id != clientv3.NoLease {
			if _, err := s.st.cli.Revoke(octx, id); err != nil {
				s.log.Debug("revoking a lease of a revoked node", "node", node, "err", err)
			}
		}
	}
	s.log.Warn("node revoked", "node", node)
	return &api.RevokeNodeResponse{}, nil
}
