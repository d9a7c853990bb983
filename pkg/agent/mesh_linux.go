package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/hbone"
	"github.com/hms-node/hms-node/pkg/agent/l4"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/api"
)

// dialAttempts bounds how many endpoints one connection tries before the
// client is reset.
const dialAttempts = 3

// serveService serves a connection the application made to a service
// VIP: at L7 for protocol: http, at L4 for tcp, sniffed for auto.
func (a *Agent) serveService(p *pod, c *net.TCPConn, dst netip.AddrPort) {
	tgt, ok := a.table.LookupVIP(dst)
	if !ok {
		a.log.Info("no service at VIP", "dst", dst)
		c.SetLinger(0)
		return
	}
	if tgt.External != nil {
		a.serveExternal(p, c, tgt.External, dst.Port())
		return
	}
	switch tgt.Service.Protocol {
	case "http":
		a.serveHTTP(p, c, tgt)
	case "tcp":
		if up, local := a.dialService(p, c, tgt); up != nil {
			defer up.Close()
			a.pipeLocal(p, local, c, up, a.tcpLabels(p, tgt.Service.Namespace, tgt.Service.Name, local)...)
		}
	default:
		a.serveAuto(p, c, tgt)
	}
}

// dialService connects to a healthy endpoint picked per connection: a
// pod of this node in-process, one on another node over the network,
// trying another endpoint when a connect fails; local is the pod of this
// node it reached in-process, if so. With none reachable it resets c and
// returns nil.
func (a *Agent) dialService(p *pod, c *net.TCPConn, tgt registry.Target) (up net.Conn, local *pod) {
	var tried []netip.AddrPort
	// Picks skip other nodes' loopback (dev) endpoints without counting
	// as a dial; Pick ends the loop once every endpoint was tried.
	for dials := 0; dials < dialAttempts; {
		ep, node, done, ok := a.table.PickTarget(tgt, tried...)
		if !ok {
			break
		}
		tried = append(tried, ep)
		if ep.Addr().IsLoopback() && node != a.cfg.Node {
			done(nil, 0) // another node's dev workload: reachable on that node only
			continue
		}
		ep = netip.AddrPortFrom(ep.Addr(), tgt.Port) // the service port this VIP port maps to
		dials++
		start := time.Now()
		up, local, err := a.dialEndpoint(p, ep, tgt.Service.Namespace, tgt.Service.Name, c)
		if err != nil {
			if errors.Is(err, hbone.ErrDenied) {
				done(nil, time.Since(start)) // policy, not a sick endpoint: no retry, no ejection
				break
			}
			done(err, time.Since(start))
			a.log.Info("endpoint connect failed; trying another", "service", tgt.Service.Name, "endpoint", ep, "error", err)
			continue
		}
		done(nil, time.Since(start)) // connect latency feeds the balancer, not the connection's lifetime
		return up, local
	}
	a.log.Warn("no healthy endpoint", "service", tgt.Service.Namespace+"/"+tgt.Service.Name, "tried", len(tried))
	c.SetLinger(0)
	return nil, nil
}

// dialEndpoint connects to an endpoint of service ns/svc: in-process when
// a pod of this node serves it (no TLS inside one agent); over an HBONE
// tunnel to another node in a mesh with identities; plain TCP standalone.
// local is the pod of this node it reached in-process, if so.
func (a *Agent) dialEndpoint(p *pod, ep netip.AddrPort, ns, svc string, c *net.TCPConn) (up net.Conn, local *pod, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DialTimeout)
	defer cancel()
	if local = a.localPod(ep); local != nil {
		if err := a.authorizeLocal(p, local); err != nil {
			return nil, nil, err
		}
		up, err = local.dialer.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ep.Port()))))
		return up, local, err
	}
	if a.ident != nil {
		up, err = a.tunnel(ctx, p, ns, svc, ep, c.RemoteAddr().(*net.TCPAddr).AddrPort())
		return up, nil, err
	}
	up, err = p.dialer.DialContext(ctx, "tcp", ep.String())
	return up, nil, err
}

// permissive tells whether a pod's service accepts plaintext inbound
// (mtls: permissive); the default is required (STRICT).
func (a *Agent) permissive(spec PodSpec) bool {
	s := a.table.Service(spec.Namespace, spec.Service)
	return s != nil && s.Mesh.GetMtls() == "permissive"
}

// serveExternal forwards to a service outside the mesh, originating TLS
// when its URL is https: the application speaks plaintext to the VIP.
func (a *Agent) serveExternal(p *pod, c *net.TCPConn, ext *api.ExternalService, port uint16) {
	u, err := url.Parse(ext.Url)
	if err != nil {
		a.log.Warn("external service URL", "name", ext.Name, "error", err)
		c.SetLinger(0)
		return
	}
	host := u.Hostname()
	upPort := u.Port()
	if upPort == "" {
		upPort = map[bool]string{true: "443", false: "80"}[u.Scheme == "https"]
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DialTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil || len(addrs) == 0 {
		a.log.Warn("resolve external service", "name", ext.Name, "host", host, "error", err)
		c.SetLinger(0)
		return
	}
	up, err := p.dialer.DialContext(ctx, "tcp", net.JoinHostPort(addrs[0].String(), upPort))
	if err != nil {
		a.log.Info("external connect failed", "name", ext.Name, "error", err)
		c.SetLinger(0)
		return
	}
	if u.Scheme == "https" {
		tc := tls.Client(up, &tls.Config{ServerName: host, RootCAs: a.externalCAs, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			a.log.Warn("TLS to external service", "name", ext.Name, "error", err)
			up.Close()
			c.SetLinger(0)
			return
		}
		up = tc
	}
	defer up.Close()
	l4.Pipe(c, up)
}

// loadCAs reads a PEM bundle for TLS origination; empty = the system pool.
func loadCAs(path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("external CA bundle: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("external CA bundle %s: no PEM certificates", path)
	}
	return pool, nil
}
