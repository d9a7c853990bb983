package manifest

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hms-node/hms-node/pkg/api"
)

var (
	healthKeys  = []string{"path", "interval"}
	meshKeys    = []string{"retries", "timeout", "circuit_breaker", "policy", "mtls", "rate_limit", "routes"}
	breakerKeys = []string{"max_failures", "reset_seconds"}
	policyKeys  = []string{"allow_from", "allow_from_any", "mtls", "mTLS"}
	routeKeys   = []string{"path", "timeout", "retries"}
	placeKeys   = []string{"nodes"}
)

// maxRetries bounds retries: beyond it a retry storm costs more than the
// call is worth; the retry budget applies on top.
const maxRetries = 10

func (p *parser) health(f field) *api.HealthCheck {
	h := &api.HealthCheck{}
	for _, g := range p.fields(f, healthKeys) {
		switch g.key {
		case "path":
			h.Path, _ = p.httpPath(g)
		case "interval":
			if d, ok := p.duration(g, time.Second); ok {
				h.IntervalMs = d.Milliseconds()
			}
		}
	}
	return h
}

// httpPath returns an absolute URL path such as /healthz.
func (p *parser) httpPath(f field) (string, bool) {
	s, ok := p.str(f)
	if !ok {
		return "", false
	}
	if !strings.HasPrefix(s, "/") || strings.ContainsAny(s, " \t\r\n") {
		p.errorAt(f.line, f.path, "%s must be a path starting with '/' and without spaces", show(s))
		return "", false
	}
	return s, true
}

func (p *parser) mesh(s *doc, f field) {
	m := s.svc.Mesh
	for _, g := range p.fields(f, meshKeys) {
		switch g.key {
		case "retries":
			if v, ok := p.integer(g, 0, maxRetries); ok {
				m.Retries = uint32(v)
			}
		case "timeout":
			m.TimeoutMs, _ = p.timeout(g)
		case "circuit_breaker":
			m.CircuitBreaker = p.breaker(g)
		case "policy":
			p.policy(s, g)
		case "mtls":
			p.mtls(s, g)
		case "rate_limit":
			m.RateLimitRps, _ = p.rate(g)
		case "routes":
			m.Routes = p.routes(g)
		}
	}
}

// timeout returns a request timeout in milliseconds (at least 1ms).
func (p *parser) timeout(f field) (int64, bool) {
	d, ok := p.duration(f, time.Millisecond)
	return d.Milliseconds(), ok
}

// ParseTimeout reads a request timeout as mesh.timeout and mesh.routes
// write it (800ms, 3s), in milliseconds, for the CLI's `route set`.
func ParseTimeout(s string) (int64, error) {
	d, err := parseDuration(s, time.Millisecond)
	return d.Milliseconds(), err
}

func (p *parser) breaker(f field) *api.CircuitBreaker {
	cb := &api.CircuitBreaker{}
	set := map[string]bool{}
	for _, g := range p.fields(f, breakerKeys) {
		set[g.key] = true
		v, ok := p.integer(g, 1, math.MaxUint32)
		if !ok {
			continue
		}
		if g.key == "max_failures" {
			cb.MaxFailures = uint32(v)
		} else {
			cb.ResetSeconds = uint32(v)
		}
	}
	if f.v.Kind == yaml.MappingNode {
		for _, k := range breakerKeys {
			if !set[k] {
				p.errorAt(f.line, join(f.path, k), "missing: a circuit breaker needs max_failures and reset_seconds")
			}
		}
	}
	return cb
}

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)rps$`)

// rate returns a rate limit written as 50rps (requests per second).
func (p *parser) rate(f field) (float64, bool) {
	s, ok := p.str(f)
	if !ok {
		return 0, false
	}
	v, err := ParseRate(s)
	if err != nil {
		p.errorAt(f.line, f.path, "%v", err)
		return 0, false
	}
	return v, true
}

// ParseRate reads a rate limit as mesh.rate_limit is written (50rps), for
// the CLI's `limit set`.
func ParseRate(s string) (float64, error) {
	m := rateRE.FindStringSubmatch(s)
	var v float64
	if m != nil {
		v, _ = strconv.ParseFloat(m[1], 64)
	}
	if m == nil || v <= 0 || v > 1e9 {
		return 0, fmt.Errorf("%s is not a rate: write requests per second, greater than 0, such as 50rps", show(s))
	}
	return v, nil
}

func (p *parser) routes(f field) []*api.RouteRule {
	items, ok := p.items(f)
	if !ok {
		return nil
	}
	var out []*api.RouteRule
	seen := map[string]int{}
	for _, it := range items {
		r := &api.RouteRule{}
		set := map[string]bool{}
		for _, g := range p.fields(it, routeKeys) {
			set[g.key] = true
			switch g.key {
			case "path":
				r.Path, _ = p.httpPath(g)
			case "timeout":
				r.TimeoutMs, _ = p.timeout(g)
			case "retries":
				if v, ok := p.integer(g, 0, maxRetries); ok {
					r.Retries = uint32(v)
				}
			}
		}
		if it.v.Kind != yaml.MappingNode {
			continue
		}
		switch {
		case !set["path"]:
			p.errorAt(it.line, join(it.path, "path"), "missing: a route needs a path")
		case !set["timeout"] && !set["retries"]:
			p.errorAt(it.line, it.path, "a route must set timeout or retries")
		}
		if r.Path != "" {
			if first, dup := seen[r.Path]; dup {
				p.errorAt(it.line, join(it.path, "path"), "route %s given twice (first at line %d)", show(r.Path), first)
			}
			seen[r.Path] = it.line
		}
		out = append(out, r)
	}
	return out
}
