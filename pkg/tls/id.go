package mtls

import (
	"errors"
	"fmt"
	"strings"
)

// spiffeScheme prefixes every SPIFFE ID; the scheme must be lowercase.
const spiffeScheme = "spiffe://"

// maxIDLen is the SPIFFE limit on the length of an ID.
const maxIDLen = 2048

// WorkloadID returns the SPIFFE ID of a workload in Istio's format,
// spiffe://<td>/ns/<ns>/sa/<svc>. It does not validate; ParseID does.
func WorkloadID(trustDomain, namespace, service string) string {
	return spiffeScheme + trustDomain + "/ns/" + namespace + "/sa/" + service
}

// NodeID returns the SPIFFE ID of a node agent, spiffe://<td>/node/<node>.
func NodeID(trustDomain, node string) string {
	return spiffeScheme + trustDomain + "/node/" + node
}

// ID is a parsed SPIFFE ID. Node is set for node IDs; Namespace and Service
// for workload IDs; never both.
type ID struct {
	TrustDomain string
	Namespace   string
	Service     string
	Node        string
}

// String formats the ID back into its URI form.
func (id ID) String() string {
	if id.IsNode() {
		return NodeID(id.TrustDomain, id.Node)
	}
	return WorkloadID(id.TrustDomain, id.Namespace, id.Service)
}

// IsNode reports whether the ID names a node agent rather than a workload.
func (id ID) IsNode() bool { return id.Node != "" }

// Validate reports whether the ID would survive ParseID(id.String()).
func (id ID) Validate() error {
	if id.IsNode() && (id.Namespace != "" || id.Service != "") {
		return errors.New("spiffe id: both node and namespace/service set")
	}
	_, err := ParseID(id.String())
	return err
}

// ParseID parses a SPIFFE ID strictly: lowercase scheme, a valid trust
// domain, no port, user info, query, fragment or percent-encoding, and a path
// that is exactly /ns/<namespace>/sa/<service> or /node/<node>.
func ParseID(uri string) (ID, error) {
	id, err := parseID(uri)
	if err != nil {
		return ID{}, fmt.Errorf("parse spiffe id %q: %w", uri, err)
	}
	return id, nil
}

func parseID(uri string) (ID, error) {
	if uri == "" {
		return ID{}, errors.New("empty")
	}
	if len(uri) > maxIDLen {
		return ID{}, fmt.Errorf("longer than %d bytes", maxIDLen)
	}
	rest, ok := strings.CutPrefix(uri, spiffeScheme)
	if !ok {
		return ID{}, errors.New(`scheme must be "spiffe://"`)
	}
	if i := strings.IndexAny(rest, "?#%"); i >= 0 {
		return ID{}, fmt.Errorf("character %q not allowed (no query, fragment or percent-encoding)", rest[i])
	}
	td, path, _ := strings.Cut(rest, "/")
	if err := checkTrustDomain(td); err != nil {
		return ID{}, err
	}
	if path == "" {
		return ID{}, errors.New("missing path: want /ns/<namespace>/sa/<service> or /node/<node>")
	}
	segs := strings.Split(path, "/")
	for _, s := range segs {
		if err := checkSegment(s); err != nil {
			return ID{}, err
		}
	}
	switch {
	case len(segs) == 4 && segs[0] == "ns" && segs[2] == "sa":
		return ID{TrustDomain: td, Namespace: segs[1], Service: segs[3]}, nil
	case len(segs) == 2 && segs[0] == "node":
		return ID{TrustDomain: td, Node: segs[1]}, nil
	}
	return ID{}, fmt.Errorf("path %q: want /ns/<namespace>/sa/<service> or /node/<node>", "/"+path)
}

// checkTrustDomain applies the SPIFFE rules: lowercase letters, digits, dots,
// dashes and underscores; no port or user info.
func checkTrustDomain(td string) error {
	if td == "" {
		return errors.New("empty trust domain")
	}
	if len(td) > 255 {
		return errors.New("trust domain longer than 255 bytes")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("trust domain %q must be lowercase", td)
		default:
			return fmt.Errorf("trust domain %q has invalid character %q", td, c)
		}
	}
	return nil
}

// checkSegment applies the SPIFFE path-segment rules.
func checkSegment(s string) error {
	switch s {
	case "":
		return errors.New("empty path segment (double or trailing slash)")
	case ".", "..":
		return fmt.Errorf("path segment %q not allowed", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("path segment %q has invalid character %q", s, c)
		}
	}
	return nil
}

// CheckTrustDomain reports whether td is a valid SPIFFE trust domain.
func CheckTrustDomain(td string) error { return checkTrustDomain(td) }

// checkNodeName validates a node name as it appears in IDs and certificates.
func checkNodeName(node string) error {
	if node == "" {
		return errors.New("empty node name")
	}
	if err := checkSegment(node); err != nil {
		return fmt.Errorf("node name: %w", err)
	}
	return nil
}
