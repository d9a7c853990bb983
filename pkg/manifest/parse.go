package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/hms-node/hms-node/pkg/api"
)

// Defaults applied to what a manifest leaves out (DESIGN §5, §6).
const (
	DefaultNamespace = "default"
	DefaultProtocol  = "auto"
	DefaultMTLS      = "required"
)

// ParseFile reads and parses one manifest file. A read failure is returned
// as a plain error; problems in the content as Errors.
func ParseFile(path string) ([]*api.Service, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return Parse(path, data)
}

// Parse parses one file's bytes (several YAML documents allowed, one
// service each) into services, in file order. file is used in errors only.
// Empty documents (a trailing "---", a comment-only document) are skipped.
// If anything is wrong, it returns nil and an Errors with every problem
// found, so that nothing in the file is applied.
func Parse(file string, data []byte) ([]*api.Service, error) {
	p := &parser{file: file}
	docs := p.decode(data)
	var svcs []*api.Service
	first := map[string]int{} // namespace/name → line of its first service
	for _, d := range docs {
		s, line := p.document(d)
		if s == nil {
			continue
		}
		svcs = append(svcs, s)
		if s.Name == "" {
			continue
		}
		key := s.Namespace + "/" + s.Name
		if at, dup := first[key]; dup {
			p.errorAt(line, "name", "service %s is defined twice in this file (first at line %d)", key, at)
			continue
		}
		first[key] = line
	}
	if len(p.errs) == 0 && len(svcs) == 0 {
		p.errorAt(1, "", "no services in file")
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	return svcs, nil
}

// parser collects the problems of one file.
type parser struct {
	file string
	errs Errors
}

func (p *parser) errorAt(line int, field, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// decode splits the file into YAML documents. It stops at the first syntax
// error: libyaml cannot resynchronise after one.
func (p *parser) decode(data []byte) (docs []*yaml.Node) {
	lines := bytes.Count(data, []byte("\n")) + 1
	defer func() {
		// A manifest is user input: a bug in the YAML library must become
		// an error for the user, not a crash of the CLI.
		if r := recover(); r != nil {
			p.errs = append(p.errs, syntaxError(p.file, fmt.Errorf("yaml: %v", r), lines))
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			p.errs = append(p.errs, syntaxError(p.file, err, lines))
			return docs
		}
		docs = append(docs, &n)
	}
}

// topKeys are the keys a service document may have, in the order the
// "allowed:" part of an unknown-key message lists them.
var topKeys = []string{"service", "name", "namespace", "version", "port", "ports",
	"image", "protocol", "health", "mesh", "policy", "placement"}

// serviceKeys are the keys of the `service:` block (shapes 1 and 3).
var serviceKeys = []string{"name", "namespace", "version", "port", "ports"}

// doc is the state of one service document while it is walked.
type doc struct {
	svc      *api.Service
	nameLine int
	once     map[string]setAt // name, namespace, version, port: where first set
	policy   *setAt           // where a policy was given
	mtls     []mtlsAt         // every mtls setting, to find contradictions
}

type setAt struct {
	path string
	line int
}

type mtlsAt struct {
	setAt
	value string
}

// document parses one YAML document. It returns nil for an empty document
// and for one that is not a mapping; otherwise the service (complete only
// if no error was recorded) and the line of its name.
func (p *parser) document(d *yaml.Node) (*api.Service, int) {
	if len(d.Content) == 0 {
		return nil, 0
	}
	root := resolve(d.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" && root.Value == "" {
		return nil, 0
	}
	if root.Kind != yaml.MappingNode {
		p.errorAt(root.Line, "", "a document must be a mapping describing one service, got %s", describe(root))
		return nil, 0
	}
	s := &doc{
		svc: &api.Service{
			Mesh:      &api.MeshPolicy{},
			Placement: &api.Placement{},
		},
		once: map[string]setAt{},
	}
	var block *field
	for _, f := range p.fields(field{v: root, line: root.Line}, topKeys) {
		switch f.key {
		case "service":
			block = &f
			for _, g := range p.fields(f, serviceKeys) {
				p.identity(s, g)
			}
		case "image":
			s.svc.Image, _ = p.text(f)
		case "protocol":
			s.svc.Protocol, _ = p.oneOf(f, "http", "tcp", "auto")
		case "health":
			s.svc.Health = p.health(f)
		case "mesh":
			p.mesh(s, f)
		case "policy":
			p.policy(s, f)
		case "placement":
			p.placement(s, f)
		default:
			p.identity(s, f)
		}
	}
	p.finish(s, root, block)
	return s.svc, s.nameLine
}

// identity handles the keys that may stand at the top level or in the
// `service:` block; each may be given only once.
func (p *parser) identity(s *doc, f field) {
	canon := f.key
	if canon == "ports" {
		canon = "port"
	}
	if prev, dup := s.once[canon]; dup {
		p.errorAt(f.keyLine, f.path, "already given as %s at line %d; give it once", prev.path, prev.line)
		return
	}
	s.once[canon] = setAt{f.path, f.keyLine}
	switch f.key {
	case "name":
		s.svc.Name, _ = p.label(f)
		s.nameLine = f.line
	case "namespace":
		s.svc.Namespace, _ = p.label(f)
	case "version":
		s.svc.Version, _ = p.text(f)
	case "port":
		if port, ok := p.port(f); ok {
			s.svc.Ports = []uint32{port}
		}
	case "ports":
		s.svc.Ports = p.ports(f)
	}
}

// finish reports what is missing and fills in the defaults.
func (p *parser) finish(s *doc, root *yaml.Node, block *field) {
	where, prefix := root.Line, ""
	if block != nil {
		where, prefix = block.keyLine, "service."
	}
	if _, ok := s.once["name"]; !ok {
		p.errorAt(where, prefix+"name", "missing: every service needs a name")
		s.nameLine = where
	}
	if _, ok := s.once["port"]; !ok {
		p.errorAt(where, prefix+"port", "missing: give port: N or ports: [N, ...]")
	}
	svc := s.svc
	if svc.Namespace == "" {
		svc.Namespace = DefaultNamespace
	}
	if svc.Protocol == "" {
		svc.Protocol = DefaultProtocol
	}
	if svc.Mesh.Mtls == "" {
		svc.Mesh.Mtls = DefaultMTLS
	}
	if len(svc.Placement.Nodes) == 0 {
		svc.Placement.Nodes = []string{"*"}
	}
}
