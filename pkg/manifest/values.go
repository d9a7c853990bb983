package manifest

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// field is one value being parsed: a mapping entry or a list item.
type field struct {
	key     string     // the key as written; "" for list items
	path    string     // dotted path, for errors
	v       *yaml.Node // the value, aliases resolved
	line    int        // the value's line as written
	keyLine int        // the key's line (the item's line for list items)
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *parser) wrongType(f field, want string) {
	p.errorAt(f.line, f.path, "expected %s, got %s", want, describe(f.v))
}

// fields checks that f is a mapping with plain string keys, each given
// once and each in allowed, and returns its entries in file order.
func (p *parser) fields(f field, allowed []string) []field {
	n := f.v
	if n.Kind != yaml.MappingNode {
		p.wrongType(f, "a mapping")
		return nil
	}
	seen := map[string]int{}
	var out []field
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			what := describe(k)
			if k.ShortTag() == "!!merge" {
				what = "a merge key (<<), which manifests do not support"
			}
			p.errorAt(k.Line, f.path, "keys must be plain strings, got %s", what)
			continue
		}
		path := join(f.path, k.Value)
		if first, dup := seen[k.Value]; dup {
			p.errorAt(k.Line, path, "key repeated (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if !slices.Contains(allowed, k.Value) {
			p.errorAt(k.Line, path, "unknown key %s; allowed: %s", show(k.Value), strings.Join(allowed, ", "))
			continue
		}
		out = append(out, field{key: k.Value, path: path, v: resolve(v), line: v.Line, keyLine: k.Line})
	}
	return out
}

// items checks that f is a list and returns its items.
func (p *parser) items(f field) ([]field, bool) {
	if f.v.Kind != yaml.SequenceNode {
		p.wrongType(f, "a list")
		return nil, false
	}
	out := make([]field, len(f.v.Content))
	for i, n := range f.v.Content {
		out[i] = field{path: fmt.Sprintf("%s[%d]", f.path, i), v: resolve(n), line: n.Line, keyLine: n.Line}
	}
	return out, true
}

// str returns a string value; other scalars (numbers, booleans) are wrong
// types.
func (p *parser) str(f field) (string, bool) {
	if f.v.Kind != yaml.ScalarNode || f.v.ShortTag() != "!!str" {
		p.wrongType(f, "a string")
		return "", false
	}
	return f.v.Value, true
}

// text returns an informational value (version, image) as written; a
// number such as `version: 2` is taken as its text.
func (p *parser) text(f field) (string, bool) {
	switch tag := f.v.ShortTag(); {
	case f.v.Kind != yaml.ScalarNode || (tag != "!!str" && tag != "!!int" && tag != "!!float"):
		p.wrongType(f, "a string")
	case strings.TrimSpace(f.v.Value) == "":
		p.errorAt(f.line, f.path, "must not be empty")
	case strings.ContainsAny(f.v.Value, "\n\r\t"):
		p.errorAt(f.line, f.path, "must be one line")
	default:
		return f.v.Value, true
	}
	return "", false
}

// oneOf returns a string value that must be one of choices.
func (p *parser) oneOf(f field, choices ...string) (string, bool) {
	s, ok := p.str(f)
	if !ok {
		return "", false
	}
	if !slices.Contains(choices, s) {
		p.errorAt(f.line, f.path, "%s is not one of %s", show(s), strings.Join(choices, ", "))
		return "", false
	}
	return s, true
}

var dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// validLabel reports whether s is a DNS label as service and namespace
// names must be: it becomes part of <svc>.<ns>.svc and of SPIFFE IDs.
func validLabel(s string) bool {
	return len(s) <= 63 && dnsLabel.MatchString(s)
}

const labelRule = "must be a DNS label: lowercase letters, digits and '-', starting with a letter, not ending with '-', at most 63 characters"

// label returns a service or namespace name.
func (p *parser) label(f field) (string, bool) {
	s, ok := p.str(f)
	if !ok {
		return "", false
	}
	if !validLabel(s) {
		p.errorAt(f.line, f.path, "%s %s", show(s), labelRule)
		return "", false
	}
	return s, true
}

// integer returns an integer value within [lo, hi].
func (p *parser) integer(f field, lo, hi int64) (int64, bool) {
	var v int64
	if f.v.Kind != yaml.ScalarNode || f.v.ShortTag() != "!!int" {
		p.wrongType(f, "an integer")
		return 0, false
	}
	if err := f.v.Decode(&v); err != nil || v < lo || v > hi {
		p.errorAt(f.line, f.path, "%s is out of range %d..%d", show(f.v.Value), lo, hi)
		return 0, false
	}
	return v, true
}

// reservedPorts are the mesh's own in-pod ports (DESIGN §8): the agent
// listens on them inside every enrolled pod.
var reservedPorts = map[int64]string{
	15001: "outbound proxy", 15006: "inbound plaintext", 15008: "HBONE",
	15020: "agent metrics", 15053: "mesh DNS",
}

func (p *parser) port(f field) (uint32, bool) {
	v, ok := p.integer(f, 1, 65535)
	if !ok {
		return 0, false
	}
	if use, reserved := reservedPorts[v]; reserved {
		p.errorAt(f.line, f.path, "port %d is reserved by the mesh (%s); use another port", v, use)
		return 0, false
	}
	return uint32(v), true
}

func (p *parser) ports(f field) []uint32 {
	items, ok := p.items(f)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.errorAt(f.line, f.path, "must list at least one port")
		return nil
	}
	var out []uint32
	seen := map[uint32]int{}
	for _, it := range items {
		port, ok := p.port(it)
		if !ok {
			continue
		}
		if first, dup := seen[port]; dup {
			p.errorAt(it.line, it.path, "port %d listed twice (first at line %d)", port, first)
			continue
		}
		seen[port] = it.line
		out = append(out, port)
	}
	return out
}

// duration returns a Go duration string (800ms, 2s) of at least lo.
func (p *parser) duration(f field, lo time.Duration) (time.Duration, bool) {
	if f.v.Kind != yaml.ScalarNode || f.v.ShortTag() != "!!str" {
		p.wrongType(f, "a duration such as 800ms or 2s")
		return 0, false
	}
	d, err := parseDuration(f.v.Value, lo)
	if err != nil {
		p.errorAt(f.line, f.path, "%v", err)
		return 0, false
	}
	return d, true
}

func parseDuration(s string, lo time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s is not a duration (examples: 800ms, 2s, 1m)", show(s))
	}
	if d < lo {
		return 0, fmt.Errorf("%s is too short: must be at least %v", show(s), lo)
	}
	return d, nil
}

func (p *parser) boolean(f field) (bool, bool) {
	if f.v.Kind != yaml.ScalarNode || f.v.ShortTag() != "!!bool" {
		p.wrongType(f, "true or false")
		return false, false
	}
	var b bool
	if err := f.v.Decode(&b); err != nil {
		p.wrongType(f, "true or false")
		return false, false
	}
	return b, true
}
