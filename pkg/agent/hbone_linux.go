package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/hbone"
	"github.com/hms-node/hms-node/pkg/agent/l4"
	"github.com/hms-node/hms-node/pkg/agent/metrics"
	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

type poolKey = hbone.Key

// lnHBONE is the pod's in-pod mTLS listener, [::]:15008.
const lnHBONE = "hbone"

// verifier checks peers against the mesh roots and refuses revoked nodes.
func (a *Agent) verifier() *mtls.Verifier {
	return &mtls.Verifier{Roots: a.ident.roots, TrustDomain: a.ident.trustDomain, Revoked: a.table.Revoked}
}

// newPool is the pod's HBONE client pool: tunnels are dialled from inside
// the pod's netns, with the pod's workload certificate.
func (a *Agent) newPool(p *pod) *hbone.Pool {
	return &hbone.Pool{
		Log: a.log,
		Dial: func(ctx context.Context, ip netip.Addr) (net.Conn, error) {
			return p.dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, hbone.Port).String())
		},
		TLS: func(k hbone.Key) *tls.Config {
			return mtls.ClientConfig(p.getClientCert, a.verifier(), mtls.ExpectID(k.Dst))
		},
	}
}

// startHBONEServer serves the pod's 15008: the pod's certificate, the
// caller's verified, the destination's policy checked, then the
// application over the pod's loopback.
func (a *Agent) startHBONEServer(p *pod) {
	cfg := mtls.ServerConfig(p.getCert, a.verifier(), nil)
	// Let a caller without a certificate reach the verifier (which refuses
	// it), so every refused handshake is counted and logged like a denial.
	cfg.ClientAuth = tls.RequestClientCert
	verify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := verify(raw, chains); err != nil {
			a.deny(p, "", "handshake", err)
			return err
		}
		return nil
	}
	p.hboneSrv = &hbone.Server{Log: a.log,
		TLS: cfg,
		Handle: func(ctx context.Context, r *hbone.Request) (net.Conn, error) {
			return a.acceptTunnel(ctx, p, r)
		},
		Stream: func(ctx context.Context, r *hbone.Request) (func(net.Conn), error) {
			return a.acceptHTTPTunnel(ctx, p, r)
		}}
	go p.hboneSrv.Serve(p.ln[lnHBONE])
}

func (a *Agent) acceptTunnel(ctx context.Context, p *pod, r *hbone.Request) (net.Conn, error) {
	caller, dst, err := a.checkTunnel(p, r)
	if err != nil {
		return nil, err
	}
	app, err := p.dialer.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(dst.Port()))))
	if err != nil {
		return nil, err
	}
	a.accepted.Add(1)
	a.log.Debug("tunnel accepted", "callee", p.spec.Namespace+"/"+p.spec.Service, "caller", caller.String(), "authority", r.Authority)
	// Tracked like a proxied connection, so a replaced agent drains it.
	a.conns.Add(1)
	p.active.Add(1)
	p.track(app, true)
	tc := &tunnelConn{trackedConn: trackedConn{Conn: app, done: func() { p.track(app, false); p.active.Done(); a.conns.Done() }}}
	tc.report = a.metrics.OpenTCP(metrics.TCPLabels{Reporter: "destination",
		SourceWorkload: caller.Namespace + "/" + caller.Service, SourcePrincipal: caller.String(),
		DestinationService:   p.spec.Namespace + "/" + p.spec.Service,
		DestinationPrincipal: mtls.WorkloadID(a.ident.trustDomain, p.spec.Namespace, p.spec.Service),
		SecurityPolicy:       "mutual_tls"}, &tc.sent, &tc.received)
	return tc, nil
}

// tunnelConn is the application's end of an accepted byte tunnel, which
// the HBONE server relays with Read and Write: it counts the bytes for
// the destination's TCP metrics, one atomic add per chunk: what it reads
// from the application is sent to the client, what it writes is received
// from it.
type tunnelConn struct {
	trackedConn
	sent, received atomic.Int64
	report         *metrics.TCPConn
}

func (c *tunnelConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.sent.Add(int64(n))
	return n, err
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.received.Add(int64(n))
	return n, err
}

// Close reports the connection closed; the HBONE server closes it again
// once both copies are joined, which reports any bytes a copy still
// moved after the first Close.
func (c *tunnelConn) Close() error {
	err := c.trackedConn.Close()
	c.report.Close()
	return err
}

// checkTunnel verifies a CONNECT: the caller's identity and node, the
// authority (a port of this pod) and the destination's policy.
func (a *Agent) checkTunnel(p *pod, r *hbone.Request) (mtls.ID, netip.AddrPort, error) {
	caller, err := mtls.PeerID(r.State)
	if err != nil {
		return caller, netip.AddrPort{}, a.deny(p, "", "no identity", err)
	}
	// The handshake checked revocation once; a pooled connection carries
	// tunnels long after, so check the caller's node on every CONNECT.
	node, err := mtls.NodeOf(r.State.PeerCertificates[0])
	if err != nil {
		return caller, netip.AddrPort{}, a.deny(p, caller.String(), "no node", err)
	}
	if a.table.Revoked(node) {
		return caller, netip.AddrPort{}, a.deny(p, caller.String(), "revoked", fmt.Errorf("%w %s (certificate %s)", mtls.ErrRevoked, node, caller))
	}
	dst, err := netip.ParseAddrPort(r.Authority)
	if err != nil || dst.Addr().Unmap() != p.spec.IP || !hasPort(p.spec.Ports, dst.Port()) {
		return caller, netip.AddrPort{}, a.deny(p, caller.String(), "wrong authority", fmt.Errorf("%q is not a port of this pod", r.Authority))
	}
	if err := a.authorize(p.spec, caller); err != nil {
		return caller, netip.AddrPort{}, a.deny(p, caller.String(), "policy", err)
	}
	return caller, dst, nil
}

// trackedConn runs done once when closed.
type trackedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}

// CloseWrite keeps half-close working through the wrapper.
func (c *trackedConn) CloseWrite() error {
	return l4.CloseWrite(c.Conn)
}

// authorizeLocal applies the destination's policy to a same-node call,
// which never crosses 15008: the agent knows both identities.
func (a *Agent) authorizeLocal(src *pod, dst *pod) error {
	if a.ident == nil {
		return nil // standalone: no identities, no policy
	}
	caller := mtls.ID{TrustDomain: a.ident.trustDomain, Namespace: src.spec.Namespace, Service: src.spec.Service}
	if err := a.authorize(dst.spec, caller); err != nil {
		return a.deny(dst, caller.String(), "policy", err)
	}
	return nil
}

// deny counts and logs a refused tunnel; the caller's agent resets the
// application's connection.
func (a *Agent) deny(p *pod, caller, reason string, err error) error {
	a.denied.Add(1)
	a.metrics.Deny(reason)
	a.log.Warn("denied", "callee", p.spec.Namespace+"/"+p.spec.Service, "caller", caller, "reason", reason, "error", err)
	return fmt.Errorf("%w: %v", hbone.ErrDenied, err)
}

// authorize applies the destination service's allow_from: allow_from_any,
// "svc" (same namespace), "ns/svc", "ns/*"; without a policy only callers
// of the same namespace are allowed.
func (a *Agent) authorize(dst PodSpec, caller mtls.ID) error {
	if caller.IsNode() {
		return fmt.Errorf("%s is a node identity, not a workload", caller)
	}
	var mesh *api.MeshPolicy
	if s := a.table.Service(dst.Namespace, dst.Service); s != nil {
		mesh = s.Mesh
	}
	if mesh.GetAllowFromAny() {
		return nil
	}
	if len(mesh.GetAllowFrom()) == 0 {
		if caller.Namespace == dst.Namespace {
			return nil
		}
		return fmt.Errorf("%s/%s is in another namespace and %s/%s has no allow_from", caller.Namespace, caller.Service, dst.Namespace, dst.Service)
	}
	for _, rule := range mesh.GetAllowFrom() {
		ns, svc, ok := strings.Cut(rule, "/")
		if !ok {
			ns, svc = dst.Namespace, rule
		}
		if ns == caller.Namespace && (svc == "*" || svc == caller.Service) {
			return nil
		}
	}
	return fmt.Errorf("%s/%s is not in allow_from of %s/%s", caller.Namespace, caller.Service, dst.Namespace, dst.Service)
}

func hasPort(ports []uint16, p uint16) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

// tunnel opens an HBONE tunnel from pod p to a workload of service (ns,
// svc) at ep, on the node's behalf of the pod's identity.
func (a *Agent) tunnel(ctx context.Context, p *pod, ns, svc string, ep netip.AddrPort, client netip.AddrPort) (net.Conn, error) {
	return a.openTunnel(ctx, p, ns, svc, ep, client, "")
}

// tunnelHTTP opens a tunnel that carries this agent's HTTP requests for
// pod p, kept alive in the pod's HTTP pool.
func (a *Agent) tunnelHTTP(ctx context.Context, p *pod, ns, svc string, ep netip.AddrPort) (net.Conn, error) {
	return a.openTunnel(ctx, p, ns, svc, ep, netip.AddrPortFrom(p.spec.IP, 0), "http")
}

func (a *Agent) openTunnel(ctx context.Context, p *pod, ns, svc string, ep, client netip.AddrPort, protocol string) (net.Conn, error) {
	r, err := p.awaitIdentity(ctx)
	if err != nil {
		return nil, err
	}
	k := hbone.Key{Src: r.ID, Dst: mtls.WorkloadID(a.ident.trustDomain, ns, svc), IP: ep.Addr()}
	hdr := http.Header{}
	hdr.Set("Forwarded", fmt.Sprintf("for=%q", netip.AddrPortFrom(p.spec.IP, client.Port()).String()))
	hdr.Set("traceparent", newTraceparent())
	if protocol != "" {
		hdr.Set(headerProtocol, protocol)
	}
	return p.pool.Connect(ctx, k, ep.String(), hdr)
}

// identityWait bounds how long a call waits for the pod's first workload
// certificate: right after enrolment the CA is still confirming the pod's
// instance, and a call then should be late, not failed.
const identityWait = 5 * time.Second

func (p *pod) awaitIdentity(ctx context.Context) (*mtls.Rotator, error) {
	deadline := time.Now().Add(identityWait)
	for {
		if r := p.identity.Load(); r != nil && r.Certificate() != nil {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("this pod has no workload certificate after %s: see the agent log for why the CA refused it", identityWait)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// newTraceparent starts a W3C trace context for a connection.
func newTraceparent() string {
	var b [24]byte
	rand.Read(b[:])
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}

// certExpiry is the pod's workload identity and certificate expiry for
// status.
func (p *pod) certInfo() (id string, leaf *x509.Certificate) {
	r := p.identity.Load()
	if r == nil {
		return "", nil
	}
	return r.ID, r.Leaf()
}

func (p *pod) getCert(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.currentCert() }

func (p *pod) getClientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.currentCert()
}

func (p *pod) currentCert() (*tls.Certificate, error) {
	if r := p.identity.Load(); r != nil {
		if c := r.Certificate(); c != nil {
			return c, nil
		}
	}
	return nil, errors.New("no workload certificate yet")
}
