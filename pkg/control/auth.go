package control

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"sync"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// role is who may call a method.
type role int

const (
	roleNone  role = iota + 1 // anyone (the call authenticates itself)
	roleAdmin                 // the admin identity (the CLI)
	roleNode                  // a node identity (an agent)
)

// methodRoles is the authorization table; a method missing from it is
// refused.
var methodRoles = map[string]role{
	api.Registry_Apply_FullMethodName:         roleAdmin,
	api.Registry_Delete_FullMethodName:        roleAdmin,
	api.Registry_List_FullMethodName:          roleAdmin,
	api.Registry_AddExternal_FullMethodName:   roleAdmin,
	api.Registry_SetLimit_FullMethodName:      roleAdmin,
	api.Registry_ClearLimit_FullMethodName:    roleAdmin,
	api.Registry_SetRoute_FullMethodName:      roleAdmin,
	api.Registry_Tap_FullMethodName:           roleAdmin,
	api.Identity_CreateToken_FullMethodName:   roleAdmin,
	api.Identity_RevokeNode_FullMethodName:    roleAdmin,
	api.Identity_Join_FullMethodName:          roleNone,
	api.Identity_RenewNode_FullMethodName:     roleNode,
	api.Identity_IssueWorkload_FullMethodName: roleNode,
	api.Agents_Connect_FullMethodName:         roleNode,
}

// caller is a verified client of the API.
type caller struct {
	id   mtls.ID
	node string // the node its certificate was issued to
}

// callerOf returns the client's identity, or nil when it presented no
// certificate. The chain was verified during the handshake.
func callerOf(ctx context.Context) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, nil
	}
	id, err := mtls.PeerID(ti.State)
	if err != nil {
		return nil, err
	}
	node, err := mtls.NodeOf(ti.State.PeerCertificates[0])
	if err != nil {
		return nil, err
	}
	return &caller{id: id, node: node}, nil
}

// authorizer checks every call against methodRoles and the revocations.
type authorizer struct {
	admin   string // the admin's SPIFFE ID
	revoked *revocations
}

func (a *authorizer) check(ctx context.Context, method string) error {
	name := strings.ReplaceAll(strings.TrimPrefix(method, "/hms.v1."), "/", ".")
	r, ok := methodRoles[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not served", name)
	}
	c, err := callerOf(ctx)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "client certificate: %v", oneLine(err.Error()))
	}
	if c != nil && a.revoked.has(c.node) {
		return status.Errorf(codes.PermissionDenied, "node %s is revoked", c.node)
	}
	switch {
	case r == roleNone:
		return nil
	case c == nil && r == roleAdmin:
		return status.Errorf(codes.Unauthenticated, "%s needs the admin's client certificate (admin.yaml)", name)
	case c == nil:
		return status.Errorf(codes.Unauthenticated, "%s needs a node certificate (join with a token first)", name)
	case r == roleAdmin && (c.id.String() != a.admin || c.node != adminNode):
		// The node check too: the ID alone is a workload ID that a
		// certificate issued to a node must never pass for.
		return status.Errorf(codes.PermissionDenied, "%s needs the admin identity %s, not %s (node %s)", name, a.admin, c.id, c.node)
	case r == roleNode && !c.id.IsNode():
		return status.Errorf(codes.PermissionDenied, "%s needs a node identity, not %s", name, c.id)
	}
	return nil
}

func (a *authorizer) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authorizer) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// serverTLS is the API's TLS 1.3 config: a client certificate is optional
// at the TLS layer (Join comes without one) but verified when given; the
// interceptors then authorize each call. Revocation is checked there too,
// so a revoked node gets a clear status instead of a failed handshake.
func serverTLS(ca *mtls.CA, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	v := &mtls.Verifier{Roots: ca.Roots(), TrustDomain: ca.TrustDomain}
	cfg := mtls.ServerConfig(getCert, v, nil)
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	cfg.ClientCAs = ca.Roots()
	verify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return nil
		}
		return verify(raw, chains)
	}
	return cfg
}

// revocations is a replica's set of revoked nodes, loaded at start and fed
// from the hub's watch; a revocation also ends the node's agent streams.
type revocations struct {
	// mu guards the fields below.
	mu      sync.Mutex
	nodes   map[string]bool
	streams map[string]map[*agentStream]context.CancelCauseFunc
}

func newRevocations() *revocations {
	return &revocations{nodes: map[string]bool{}, streams: map[string]map[*agentStream]context.CancelCauseFunc{}}
}

func (r *revocations) has(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes[node]
}

// set records node as revoked (or no longer, when an operator deleted the
// key) and ends its streams.
func (r *revocations) set(node string, revoked bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nodes[node] = revoked
	if !revoked {
		delete(r.nodes, node)
		return
	}
	for _, cancel := range r.streams[node] {
		cancel(status.Errorf(codes.PermissionDenied, "node %s is revoked", node))
	}
}

// observe feeds the set from one delta of the hub.
func (r *revocations) observe(d *api.Delta) {
	for _, c := range d.GetChanges() {
		if node, ok := strings.CutPrefix(c.GetKey(), kindRevoked+"/"); ok {
			r.set(node, !c.GetDeleted())
		}
	}
}

// track registers a stream of node, so a revocation ends it; it reports
// false when the node is revoked already. untrack undoes it.
func (r *revocations) track(node string, as *agentStream, cancel context.CancelCauseFunc) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodes[node] {
		return false
	}
	if r.streams[node] == nil {
		r.streams[node] = map[*agentStream]context.CancelCauseFunc{}
	}
	r.streams[node][as] = cancel
	return true
}

func (r *revocations) untrack(node string, as *agentStream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.streams[node], as)
	if len(r.streams[node]) == 0 {
		delete(r.streams, node)
	}
}
