package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/hbone"
	"github.com/hms-node/hms-node/pkg/agent/l7"
	"github.com/hms-node/hms-node/pkg/agent/ratelimit"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/agent/resilience"
	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// Retry budget (Linkerd's defaults): retries may add 20% to the requests
// of the last 10 s, plus 10 per second so a quiet service can retry too.
// Rate limits queue a request at most 100 ms (DESIGN §3).
const (
	retryRatio       = 0.2
	retryFloorPerSec = 10
	retryBudgetTTL   = 10 * time.Second
	rateLimitWait    = 100 * time.Millisecond
)

// headerProtocol on a CONNECT says the tunnel carries the caller agent's
// HTTP requests (not an application's byte stream), so the destination
// agent serves them at L7: rate limits, its own records.
const headerProtocol = "X-Hms-Protocol"

func (a *Agent) initL7() {
	breakers := resilience.NewBreakers(nil)
	breakers.OnChange(a.metrics.SetCircuit)
	a.httpOut = &l7.Client{
		Node:              a.cfg.Node,
		Breakers:          breakers,
		Budgets:           resilience.NewBudgets(retryRatio, retryFloorPerSec, retryBudgetTTL),
		Record:            a.recordCall,
		OnRetry:           a.metrics.Retry,
		OnBudgetExhausted: a.metrics.RetryBudgetExhausted,
		Log:               a.log,
	}
	a.httpIn = &l7.Server{Node: a.cfg.Node, Limits: ratelimit.NewSet(rateLimitWait), Record: a.recordCall,
		OnRateLimited: a.metrics.RateLimited, OnQueued: a.metrics.RateLimitQueued, Log: a.log}
	a.circuitStatus = func() []*api.CircuitStatus {
		var out []*api.CircuitStatus
		for dst, state := range a.httpOut.Breakers.States() {
			out = append(out, &api.CircuitStatus{Destination: dst, State: state})
		}
		return out
	}
}

// recordCall is where every HTTP request the proxy saw goes: the tap
// ring, the per-edge stats (from the caller's side), and the access log
// (debug level; `hms-node tail` streams it live).
func (a *Agent) recordCall(c *api.Call) {
	a.metrics.ObserveCall(c)
	a.tap.Add(c)
	if c.Reporter == "source" {
		a.stats.Observe(c)
	}
	if !a.log.Enabled(context.Background(), slog.LevelDebug) {
		return // don't box a dozen fields per request for a disabled level
	}
	a.log.Debug("access", "reporter", c.Reporter, "src", c.SourceWorkload, "dst", c.DestinationService,
		"method", c.Method, "path", c.Path, "status", c.Status, "us", c.LatencyUs, "retries", c.Retries,
		"flags", c.Flags, "endpoint", c.Endpoint, "trace", c.TraceId)
}

// serveHTTP serves an application's connection to a mesh service at L7.
func (a *Agent) serveHTTP(p *pod, c net.Conn, tgt registry.Target) {
	svc := tgt.Service
	a.httpOut.ServeConn(c, a.sourceOf(p), a.destinationOf(tgt), &httpSender{a: a, p: p, ns: svc.Namespace, svc: svc.Name, port: tgt.Port})
}

// destinationOf is how the calling side sees a service: its policy as the
// registry has it now, and a picker over its healthy endpoints.
func (a *Agent) destinationOf(tgt registry.Target) *l7.Destination {
	svc := tgt.Service
	ns, name := svc.Namespace, svc.Name
	dst := &l7.Destination{
		Namespace: ns, Service: name,
		Policy: func() l7.Policy { return a.httpPolicy(ns, name) },
		Pick: func(tried []netip.AddrPort) (netip.AddrPort, func(error, time.Duration), bool) {
			for {
				ep, node, done, ok := a.table.PickTarget(tgt, tried...)
				if !ok {
					return ep, nil, false
				}
				if ep.Addr().IsLoopback() && node != a.cfg.Node {
					done(nil, 0) // another node's dev workload: reachable on that node only
					tried = append(tried, ep)
					continue
				}
				return ep, done, true
			}
		},
	}
	if a.ident != nil {
		dst.Principal = mtls.WorkloadID(a.ident.trustDomain, ns, name)
	}
	return dst
}

func (a *Agent) sourceOf(p *pod) l7.Source {
	src := l7.Source{Workload: p.spec.Namespace + "/" + p.spec.Service, Security: "none"}
	if a.ident != nil {
		src.Security = "mutual_tls"
		if r := p.identity.Load(); r != nil {
			src.Principal = r.ID
		}
	}
	return src
}

// httpPolicy is the service's retries, timeout, routes and breaker:
// routes set with `route set` override the manifest's for the same path.
func (a *Agent) httpPolicy(ns, name string) l7.Policy {
	var pol l7.Policy
	s := a.table.Service(ns, name)
	if s == nil {
		return pol
	}
	m := s.Mesh
	pol.Retries = int(m.GetRetries())
	pol.Timeout = time.Duration(m.GetTimeoutMs()) * time.Millisecond
	if cb := m.GetCircuitBreaker(); cb != nil {
		pol.BreakerFailures = int(cb.GetMaxFailures())
		pol.BreakerReset = time.Duration(cb.GetResetSeconds()) * time.Second
	}
	set := a.table.Routes(ns, name)
	for _, r := range set {
		pol.Routes = append(pol.Routes, route(r.Path, r.TimeoutMs, r.Retries))
	}
	for _, r := range m.GetRoutes() {
		if !slices.ContainsFunc(set, func(s *api.Route) bool { return s.Path == r.Path }) {
			pol.Routes = append(pol.Routes, route(r.Path, r.TimeoutMs, r.Retries))
		}
	}
	return pol
}

// route converts a stored route; retries 0 means "not set" there, since
// the wire has no "unset" for it.
func route(path string, timeoutMs int64, retries uint32) l7.Route {
	r := l7.Route{Path: path, Timeout: time.Duration(timeoutMs) * time.Millisecond, Retries: -1}
	if retries > 0 {
		r.Retries = int(retries)
	}
	return r
}

// rateLimit is the service's limit (`limit set` wins over mesh.rate_limit)
// and its ready instances.
func (a *Agent) rateLimit(ns, name string) (float64, int) {
	rps := 0.0
	if l, ok := a.table.RateLimit(ns, name); ok {
		rps = l.Rps
	} else if s := a.table.Service(ns, name); s != nil {
		rps = s.Mesh.GetRateLimitRps()
	}
	if rps <= 0 {
		return 0, 0
	}
	return rps, a.table.HealthyCount(ns, name)
}

// httpSender sends a pod's requests to one endpoint: a pod of this node
// in-process (through its called side, so limits and records apply), a
// pod of another node over an HBONE stream kept alive in the pod's pool.
type httpSender struct {
	a       *Agent
	p       *pod
	ns, svc string
	port    uint16
}

func (s *httpSender) RoundTrip(req *http.Request, ep netip.AddrPort) (*http.Response, error) {
	ep = netip.AddrPortFrom(ep.Addr(), s.port)
	req.URL.Host = ep.String()
	if local := s.a.localPod(ep); local != nil {
		if err := s.a.authorizeLocal(s.p, local); err != nil {
			return nil, fmt.Errorf("%w: %v", l7.ErrDenied, err)
		}
		src := s.a.sourceOf(s.p)
		return s.a.httpIn.RoundTrip(req, s.a.localOf(local), l7.Caller{Workload: src.Workload, Principal: src.Principal, Security: src.Security}, ep.Port())
	}
	resp, err := s.p.fastTransport(s.a).RoundTrip(req)
	if errors.Is(err, hbone.ErrDenied) {
		return nil, fmt.Errorf("%w: %v", l7.ErrDenied, err)
	}
	return resp, err
}

// httpTransport is the pod's pool of HTTP connections to other nodes'
// endpoints: each is an HBONE stream (a plain connection standalone).
func (p *pod) httpTransport(a *Agent) *http.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.http == nil {
		p.http = &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				c, err := a.dialHTTP(ctx, p, addr)
				if err != nil && !errors.Is(err, hbone.ErrDenied) {
					return nil, &l7.ConnectError{Err: err}
				}
				return c, err
			},
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       60 * time.Second, // below the destination's idle timeout
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		}
	}
	return p.http
}

// fastTransport is the pod's fast path to other nodes: an l7.Transport
// over the same tunnels as httpTransport, which serves the requests the
// fast path does not.
func (p *pod) fastTransport(a *Agent) *l7.Transport {
	fb := p.httpTransport(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.httpFast == nil {
		p.httpFast = &l7.Transport{
			Dial:           fb.DialContext,
			Fallback:       fb,
			H2:             l7.H2CTransport(fb.DialContext),
			MaxIdlePerHost: fb.MaxIdleConnsPerHost,
			IdleTimeout:    fb.IdleConnTimeout,
		}
	}
	return p.httpFast
}

func (a *Agent) dialHTTP(ctx context.Context, p *pod, addr string) (net.Conn, error) {
	ep, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	if a.ident == nil {
		return p.dialer.DialContext(ctx, "tcp", addr)
	}
	ns, svc, ok := a.meshInstance(ep)
	if !ok {
		return nil, fmt.Errorf("%s is no longer a mesh endpoint", addr)
	}
	return a.tunnelHTTP(ctx, p, ns, svc, ep)
}

// localOf is the called side's view of a pod of this node.
func (a *Agent) localOf(p *pod) *l7.Local {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.httpLocal == nil {
		ns, name := p.spec.Namespace, p.spec.Service
		p.httpLocal = &l7.Local{
			Namespace: ns, Service: name,
			Limit: func() (float64, int) { return a.rateLimit(ns, name) },
			App:   l7.AppTransport(p.dialer.DialContext),
		}
		if a.ident != nil {
			p.httpLocal.Principal = mtls.WorkloadID(a.ident.trustDomain, ns, name)
		}
	}
	return p.httpLocal
}

// acceptHTTPTunnel serves a tunnel whose CONNECT says it carries HTTP
// requests; nil serve means an ordinary byte tunnel.
func (a *Agent) acceptHTTPTunnel(ctx context.Context, p *pod, r *hbone.Request) (func(net.Conn), error) {
	if r.Header.Get(headerProtocol) != "http" {
		return nil, nil
	}
	caller, dst, err := a.checkTunnel(p, r)
	if err != nil {
		return nil, err
	}
	a.accepted.Add(1)
	node, _ := mtls.NodeOf(r.State.PeerCertificates[0]) // checkTunnel made sure there is one
	c := l7.Caller{Workload: caller.Namespace + "/" + caller.Service, Principal: caller.String(), Security: "mutual_tls",
		Check: func() error {
			if a.table.Revoked(node) {
				return a.deny(p, caller.String(), "revoked", fmt.Errorf("%w %s (certificate %s)", mtls.ErrRevoked, node, caller))
			}
			if err := a.authorize(p.spec, caller); err != nil {
				return a.deny(p, caller.String(), "policy", err)
			}
			return nil
		}}
	local := a.localOf(p)
	return func(stream net.Conn) {
		a.conns.Add(1)
		p.active.Add(1)
		defer func() { p.active.Done(); a.conns.Done() }()
		a.httpIn.ServeConn(stream, local, c, dst.Port())
	}, nil
}

// closeHTTP drops the pod's idle pooled connections.
func (p *pod) closeHTTP() {
	p.mu.Lock()
	t, f, l := p.http, p.httpFast, p.httpLocal
	p.mu.Unlock()
	if t != nil {
		t.CloseIdleConnections()
	}
	if f != nil {
		f.CloseIdleConnections()
	}
	if l != nil {
		if at, ok := l.App.(interface{ CloseIdleConnections() }); ok {
			at.CloseIdleConnections()
		}
	}
}
