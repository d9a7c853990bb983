package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hms-node/hms-node/internal/testbed"
)

// designShapes is DESIGN §6's manifest block, verbatim.
const designShapes = `service: {name: notification-svc, port: 7000}
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

func TestPrivilegedManifestsThroughTheCLI(t *testing.T) {
	testbed.RequirePrivileged(t)
	c := newControl(t)
	out := c.apply(designShapes)
	for _, svc := range []string{"notification-svc", "eligibility-svc", "photo-validator"} {
		mustContain(t, out, `✓ Service "`+svc+`" registered (VIP 240.240.`)
	}
	// Applying again updates, keeping the VIPs.
	_, first := c.list()
	out = c.apply(designShapes)
	mustContain(t, out, `✓ Service "photo-validator" updated`)
	if _, again := c.list(); again != first {
		t.Fatalf("re-apply changed the registry:\n%s\n%s", first, again)
	}

	bad := map[string]struct{ yaml, want string }{
		"unknown key":                {"name: a-svc\nport: 7000\nreplicas: 3\n", ":3: replicas"},
		"wrong type":                 {"name: a-svc\nport: abc\n", ":2: port"},
		"bad timeout":                {"name: a-svc\nport: 7000\nmesh: {timeout: soon}\n", ":3: mesh.timeout"},
		"port range":                 {"name: a-svc\nport: 70000\n", ":2: port"},
		"name twice":                 {"name: a-svc\nport: 7000\n---\nname: a-svc\nport: 7001\n", ":4: name"},
		"second doc bad, first fine": {"name: ok-svc\nport: 7000\n---\nname: b-svc\nport: 7000\nmesh: {retries: many}\n", ":6: mesh.retries"},
	}
	for name, tc := range bad {
		f := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(f, []byte(tc.yaml), 0o644)
		out, err := c.cli("apply", "-f", f)
		if err == nil {
			t.Errorf("%s: apply succeeded: %s", name, out)
			continue
		}
		if !strings.Contains(out, f+tc.want) || strings.Count(strings.TrimSpace(out), "\n") > 3 {
			t.Errorf("%s: error %q does not name %s%s", name, out, f, tc.want)
		}
		if _, now := c.list(); now != first {
			t.Fatalf("%s: a rejected manifest changed the registry", name)
		}
	}

	// delete releases the VIP; add registers an external name.
	if out, err := c.cli("delete", "photo-validator"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, err := c.cli("delete", "photo-validator"); err == nil {
		t.Fatalf("deleting a missing service succeeded: %s", out)
	}
	out, err := c.cli("add", "payments-api", "--external-url", "https://payments.example.test")
	if err != nil {
		t.Fatalf("add: %v\n%s", err, out)
	}
	mustContain(t, out, `✓ External service "payments-api" registered (VIP 240.240.`)
}
