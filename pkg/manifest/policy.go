package manifest

import (
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// policy handles `policy:` at the top level or under `mesh:` (not both):
// the string allow_from_any, or a mapping.
func (p *parser) policy(s *doc, f field) {
	if s.policy != nil {
		p.errorAt(f.keyLine, f.path, "policy is already given as %s at line %d; give it in one place", s.policy.path, s.policy.line)
		return
	}
	s.policy = &setAt{f.path, f.keyLine}
	m := s.svc.Mesh
	if f.v.Kind == yaml.ScalarNode && f.v.ShortTag() == "!!str" {
		if f.v.Value != "allow_from_any" {
			p.errorAt(f.line, f.path, "%s is not a policy: use allow_from_any or a mapping with allow_from and mtls", show(f.v.Value))
			return
		}
		m.AllowFromAny = true
		return
	}
	if f.v.Kind != yaml.MappingNode {
		p.wrongType(f, "allow_from_any or a mapping")
		return
	}
	var listAt, anyAt *field
	for _, g := range p.fields(f, policyKeys) {
		switch g.key {
		case "allow_from":
			listAt = &g
			m.AllowFrom = p.allowFrom(g)
		case "allow_from_any":
			anyAt = &g
			m.AllowFromAny, _ = p.boolean(g)
		default:
			p.mtls(s, g)
		}
	}
	if listAt != nil && anyAt != nil && m.AllowFromAny {
		p.errorAt(anyAt.keyLine, anyAt.path, "contradicts %s at line %d: allow either any caller or a list", listAt.path, listAt.keyLine)
	}
}

var nsWildcard = regexp.MustCompile(`^([^/]*)/\*$`)

// allowFrom returns the callers a policy admits: svc (in the service's own
// namespace), ns/svc, or ns/* (every service of a namespace).
func (p *parser) allowFrom(f field) []string {
	items, ok := p.items(f)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorAt(f.line, f.path, "must list at least one caller (an empty list reads as no policy)")
		return nil
	}
	var out []string
	seen := map[string]int{}
	for _, it := range items {
		s, ok := p.str(it)
		if !ok {
			continue
		}
		if !validPeer(s) {
			p.errorAt(it.line, it.path, "%s is not a caller: write svc, ns/svc or ns/*, where ns and svc are DNS labels", show(s))
			continue
		}
		if first, dup := seen[s]; dup {
			p.errorAt(it.line, it.path, "%s listed twice (first at line %d)", show(s), first)
			continue
		}
		seen[s] = it.line
		out = append(out, s)
	}
	return out
}

func validPeer(s string) bool {
	if m := nsWildcard.FindStringSubmatch(s); m != nil {
		return validLabel(m[1])
	}
	ns, svc, qualified := strings.Cut(s, "/")
	if !qualified {
		return validLabel(s)
	}
	return validLabel(ns) && validLabel(svc)
}

// mtls records one mtls setting: required or permissive, or true (=
// required) or false (= permissive). Settings that disagree are an error.
func (p *parser) mtls(s *doc, f field) {
	var mode string
	switch {
	case f.v.Kind == yaml.ScalarNode && f.v.ShortTag() == "!!bool":
		b, ok := p.boolean(f)
		if !ok {
			return
		}
		mode = "permissive"
		if b {
			mode = "required"
		}
	case f.v.Kind == yaml.ScalarNode && f.v.ShortTag() == "!!str":
		var ok bool
		if mode, ok = p.oneOf(f, "required", "permissive"); !ok {
			return
		}
	default:
		p.wrongType(f, "required, permissive, true or false")
		return
	}
	for _, prev := range s.mtls {
		if prev.value != mode {
			p.errorAt(f.line, f.path, "%s contradicts %s: %s at line %d", mode, prev.path, prev.value, prev.line)
			return
		}
	}
	s.mtls = append(s.mtls, mtlsAt{setAt{f.path, f.line}, mode})
	s.svc.Mesh.Mtls = mode
}

var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// placement handles placement.nodes: node names, or "*" for any node.
func (p *parser) placement(s *doc, f field) {
	for _, g := range p.fields(f, placeKeys) {
		items, ok := p.items(g)
		if !ok {
			continue
		}
		if len(items) == 0 {
			p.errorAt(g.line, g.path, "must list at least one node, or \"*\" for any node")
			continue
		}
		seen := map[string]int{}
		for _, it := range items {
			n, ok := p.str(it)
			if !ok {
				continue
			}
			switch {
			case n != "*" && (len(n) > 253 || !nodeName.MatchString(n)):
				p.errorAt(it.line, it.path, "%s is not a node name (lowercase DNS name) or \"*\"", show(n))
			case seen[n] != 0:
				p.errorAt(it.line, it.path, "%s listed twice (first at line %d)", show(n), seen[n])
			case n == "*" && len(items) > 1:
				p.errorAt(it.line, it.path, "\"*\" admits every node; list it alone")
			default:
				seen[n] = it.line
				s.svc.Placement.Nodes = append(s.svc.Placement.Nodes, n)
			}
		}
	}
}
