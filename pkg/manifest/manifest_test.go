package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/hms-node/hms-node/pkg/api"
)

// designExample is the block of DESIGN §6, verbatim.
const designExample = `service: {name: notification-svc, port: 7000}
mesh:
  retries: 3
  circuit_breaker: {max_failures: 5, reset_seconds: 30}
  policy: {mTLS: required}
---
name: eligibility-svc
port: 7000
image: hms/eligibility:latest      # accepted, informational
policy: allow_from_any
---
service: {name: photo-validator, version: 1.0.0, port: 7000}
mesh: {retries: 2, timeout: 800ms, mtls: true}
`

// svc returns a service with every default filled in, changed by edit.
func svc(name string, edit func(*api.Service)) *api.Service {
	s := &api.Service{
		Namespace: "default",
		Name:      name,
		Ports:     []uint32{7000},
		Protocol:  "auto",
		Mesh:      &api.MeshPolicy{Mtls: "required"},
		Placement: &api.Placement{Nodes: []string{"*"}},
	}
	if edit != nil {
		edit(s)
	}
	return s
}

func checkServices(t *testing.T, got, want []*api.Service) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d services, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("service %d:\ngot  %s\nwant %s", i, prototext.Format(got[i]), prototext.Format(want[i]))
		}
	}
}

func TestParseDesignExample(t *testing.T) {
	got, err := Parse("design.yaml", []byte(designExample))
	if err != nil {
		t.Fatal(err)
	}
	checkServices(t, got, []*api.Service{
		svc("notification-svc", func(s *api.Service) {
			s.Mesh.Retries = 3
			s.Mesh.CircuitBreaker = &api.CircuitBreaker{MaxFailures: 5, ResetSeconds: 30}
		}),
		svc("eligibility-svc", func(s *api.Service) {
			s.Image = "hms/eligibility:latest"
			s.Mesh.AllowFromAny = true
		}),
		svc("photo-validator", func(s *api.Service) {
			s.Version = "1.0.0"
			s.Mesh.Retries = 2
			s.Mesh.TimeoutMs = 800
		}),
	})
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name, in string
		want     func(*api.Service)
	}{
		{"namespace top level", "name: a\nnamespace: billing\nport: 7000\n",
			func(s *api.Service) { s.Namespace = "billing" }},
		{"namespace in service", "service: {name: a, namespace: billing, port: 7000}\n",
			func(s *api.Service) { s.Namespace = "billing" }},
		{"protocol", "name: a\nport: 7000\nprotocol: http\n",
			func(s *api.Service) { s.Protocol = "http" }},
		{"health", "name: a\nport: 7000\nhealth: {path: /healthz, interval: 5s}\n",
			func(s *api.Service) { s.Health = &api.HealthCheck{Path: "/healthz", IntervalMs: 5000} }},
		{"rate limit", "name: a\nport: 7000\nmesh: {rate_limit: 50rps}\n",
			func(s *api.Service) { s.Mesh.RateLimitRps = 50 }},
		{"routes", "name: a\nport: 7000\nmesh:\n  routes:\n    - {path: /sms, timeout: 2s, retries: 1}\n    - {path: /slow, timeout: 1m}\n",
			func(s *api.Service) {
				s.Mesh.Routes = []*api.RouteRule{{Path: "/sms", TimeoutMs: 2000, Retries: 1}, {Path: "/slow", TimeoutMs: 60000}}
			}},
		{"placement", "name: a\nport: 7000\nplacement: {nodes: [node-1, node-2.example]}\n",
			func(s *api.Service) { s.Placement.Nodes = []string{"node-1", "node-2.example"} }},
		{"policy map under mesh", "name: a\nport: 7000\nmesh:\n  policy: {allow_from: [web, shop/cart, ops/*], mtls: permissive}\n",
			func(s *api.Service) {
				s.Mesh.AllowFrom = []string{"web", "shop/cart", "ops/*"}
				s.Mesh.Mtls = "permissive"
			}},
		{"policy map top level", "name: a\nport: 7000\npolicy: {allow_from_any: true, mTLS: required}\n",
			func(s *api.Service) { s.Mesh.AllowFromAny = true }},
		{"mtls false", "name: a\nport: 7000\nmesh: {mtls: false}\n",
			func(s *api.Service) { s.Mesh.Mtls = "permissive" }},
		{"mtls agreeing twice", "name: a\nport: 7000\nmesh: {mtls: true, policy: {mtls: required}}\n", nil},
		{"ports", "name: a\nports: [7000, 7001]\n",
			func(s *api.Service) { s.Ports = []uint32{7000, 7001} }},
		{"circuit breaker", "name: a\nport: 7000\nmesh: {circuit_breaker: {max_failures: 1, reset_seconds: 1}}\n",
			func(s *api.Service) { s.Mesh.CircuitBreaker = &api.CircuitBreaker{MaxFailures: 1, ResetSeconds: 1} }},
		{"version number", "name: a\nport: 7000\nversion: 2\n",
			func(s *api.Service) { s.Version = "2" }},
		{"alias", "name: a\nport: &p 7000\nhealth: {path: /h}\n",
			func(s *api.Service) { s.Health = &api.HealthCheck{Path: "/h"} }},
		{"trailing and comment-only documents", "---\n# nothing\n---\nname: a\nport: 7000\n---\n", nil},
		{"same name in two namespaces", "name: a\nport: 7000\n---\nname: a\nnamespace: x\nport: 7000\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("m.yaml", []byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			checkServices(t, got[:1], []*api.Service{svc("a", tt.want)})
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // the first error: "FILE:LINE: FIELD: start of message"
	}{
		{"unknown key", "name: a\nport: 7000\nmesh:\n  retry: 3\n",
			`m.yaml:4: mesh.retry: unknown key "retry"; allowed: retries, timeout,`},
		{"unknown top key", "name: a\nport: 7000\nreplicas: 3\n",
			`m.yaml:3: replicas: unknown key "replicas"; allowed: service, name,`},
		{"port string", "name: a\nport: \"abc\"\n", `m.yaml:2: port: expected an integer, got the string "abc"`},
		{"retries list", "name: a\nport: 7000\nmesh: {retries: [1]}\n", `m.yaml:3: mesh.retries: expected an integer, got a list`},
		{"retries range", "name: a\nport: 7000\nmesh:\n  retries: 11\n", `m.yaml:4: mesh.retries: "11" is out of range 0..10`},
		{"bad duration", "name: a\nport: 7000\nmesh:\n  timeout: 800\n", `m.yaml:4: mesh.timeout: expected a duration`},
		{"bad duration text", "name: a\nport: 7000\nmesh: {timeout: fast}\n", `m.yaml:3: mesh.timeout: "fast" is not a duration`},
		{"zero timeout", "name: a\nport: 7000\nmesh: {timeout: 0s}\n", `m.yaml:3: mesh.timeout: "0s" is too short`},
		{"port 0", "name: a\nport: 0\n", `m.yaml:2: port: "0" is out of range 1..65535`},
		{"port 70000", "name: a\nport: 70000\n", `m.yaml:2: port: "70000" is out of range 1..65535`},
		{"port reserved", "name: a\nport: 15001\n", `m.yaml:2: port: port 15001 is reserved by the mesh`},
		{"ports reserved", "name: a\nports: [7000, 15053]\n", `m.yaml:2: ports[1]: port 15053 is reserved by the mesh`},
		{"port and ports", "name: a\nport: 7000\nports: [7001]\n", `m.yaml:3: ports: already given as port at line 2`},
		{"name twice", "name: a\nport: 7000\n---\nname: b\nport: 7000\n---\nservice: {name: a, port: 7001}\n",
			`m.yaml:7: name: service default/a is defined twice in this file (first at line 1)`},
		{"name twice in document", "service: {name: a, port: 7000}\nname: b\n", `m.yaml:2: name: already given as service.name at line 1`},
		{"missing name", "port: 7000\nmesh: {retries: 1}\n", `m.yaml:1: name: missing`},
		{"missing name in service", "mesh: {retries: 1}\nservice: {port: 7000}\n", `m.yaml:2: service.name: missing`},
		{"missing port", "---\nname: a\n", `m.yaml:2: port: missing`},
		{"bad rate limit", "name: a\nport: 7000\nmesh:\n  rate_limit: fast\n", `m.yaml:4: mesh.rate_limit: "fast" is not a rate`},
		{"bad allow_from", "name: a\nport: 7000\npolicy:\n  allow_from: [web, Shop/Cart]\n", `m.yaml:4: policy.allow_from[1]: "Shop/Cart" is not a caller`},
		{"policy twice", "name: a\nport: 7000\npolicy: allow_from_any\nmesh:\n  policy: {allow_from: [web]}\n",
			`m.yaml:5: mesh.policy: policy is already given as policy at line 3`},
		{"bad policy string", "name: a\nport: 7000\npolicy: deny_all\n", `m.yaml:3: policy: "deny_all" is not a policy`},
		{"contradicting mtls", "name: a\nport: 7000\nmesh:\n  mtls: true\n  policy: {mTLS: permissive}\n",
			`m.yaml:5: mesh.policy.mTLS: permissive contradicts mesh.mtls: required at line 4`},
		{"bad mtls", "name: a\nport: 7000\nmesh: {mtls: strict}\n", `m.yaml:3: mesh.mtls: "strict" is not one of required, permissive`},
		{"bad name", "name: Notify_Svc\nport: 7000\n", `m.yaml:1: name: "Notify_Svc" must be a DNS label`},
		{"bad namespace", "service: {name: a, namespace: 9ns, port: 7000}\n", `m.yaml:1: service.namespace: "9ns" must be a DNS label`},
		{"bad protocol", "name: a\nport: 7000\nprotocol: udp\n", `m.yaml:3: protocol: "udp" is not one of http, tcp, auto`},
		{"syntax error", "name: a\nport: 7000\n  mesh: {}\n", `m.yaml:3: invalid YAML: mapping values are not allowed`},
		{"unclosed flow", "name: a\nmesh: {retries: 1\n", `m.yaml:2: invalid YAML: did not find expected ',' or '}'`},
		{"empty document", "name: a\nport: 7000\n---\n{}\n", `m.yaml:4: name: missing`},
		{"null document", "~\n", `m.yaml:1: a document must be a mapping describing one service, got no value`},
		{"list document", "- name: a\n", `m.yaml:1: a document must be a mapping describing one service, got a list`},
		{"empty file", "# nothing here\n", `m.yaml:1: no services in file`},
		{"repeated key", "name: a\nport: 7000\nname: b\n", `m.yaml:3: name: key repeated (first at line 1)`},
		{"breaker range", "name: a\nport: 7000\nmesh:\n  circuit_breaker: {max_failures: 0, reset_seconds: 30}\n",
			`m.yaml:4: mesh.circuit_breaker.max_failures: "0" is out of range 1..4294967295`},
		{"breaker incomplete", "name: a\nport: 7000\nmesh:\n  circuit_breaker: {max_failures: 3}\n",
			`m.yaml:4: mesh.circuit_breaker.reset_seconds: missing`},
		{"health interval", "name: a\nport: 7000\nhealth: {path: /h, interval: 100ms}\n", `m.yaml:3: health.interval: "100ms" is too short: must be at least 1s`},
		{"health path", "name: a\nport: 7000\nhealth:\n  path: healthz\n", `m.yaml:4: health.path: "healthz" must be a path starting with '/'`},
		{"route without path", "name: a\nport: 7000\nmesh:\n  routes:\n    - {timeout: 1s}\n", `m.yaml:5: mesh.routes[0].path: missing`},
		{"route retries", "name: a\nport: 7000\nmesh:\n  routes:\n    - path: /x\n      retries: -1\n", `m.yaml:6: mesh.routes[0].retries: "-1" is out of range 0..10`},
		{"placement", "name: a\nport: 7000\nplacement: {nodes: [\"*\", n1]}\n", `m.yaml:3: placement.nodes[0]: "*" admits every node`},
		{"merge key", "name: a\nport: 7000\nmesh:\n  <<: {retries: 1}\n", `m.yaml:4: mesh: keys must be plain strings, got a merge key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("m.yaml", []byte(tt.in))
			if got != nil {
				t.Errorf("got %d services, want none", len(got))
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("got error %v, want Errors", err)
			}
			if first := errs[0].Error(); !strings.HasPrefix(first, tt.want) {
				t.Errorf("first error:\ngot  %s\nwant %s...", first, tt.want)
			}
			for _, e := range errs {
				if strings.Contains(e.Error(), "\n") || e.File != "m.yaml" || e.Line < 1 {
					t.Errorf("malformed error %q (line %d)", e.Error(), e.Line)
				}
			}
		})
	}
}

func TestParseMixedDocuments(t *testing.T) {
	in := designExample + "---\nname: broken\nport: 70000\n---\nname: fine\nport: 7001\nmesh: {timeout: soon}\n"
	got, err := Parse("mixed.yaml", []byte(in))
	if got != nil {
		t.Errorf("got %d services, want none", len(got))
	}
	want := "mixed.yaml:16: port: \"70000\" is out of range 1..65535\n" +
		"mixed.yaml:20: mesh.timeout: \"soon\" is not a duration (examples: 800ms, 2s, 1m)"
	if err == nil || err.Error() != want {
		t.Errorf("got error:\n%v\nwant:\n%s", err, want)
	}
}

func TestParseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(path, []byte(designExample), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ParseFile(path); err != nil || len(got) != 3 {
		t.Fatalf("ParseFile = %d services, %v", len(got), err)
	}
	if err := os.WriteFile(path, []byte("name: a\nport: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ParseFile(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2: port: ") {
		t.Fatalf("ParseFile error = %v", err)
	}
	if _, err := ParseFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("ParseFile of a missing file succeeded")
	}
}
