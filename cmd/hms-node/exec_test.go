package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExecClosedPort builds the CLI and runs it against a loopback port
// nothing listens on, as an operator would: the reason on stderr, nothing
// on stdout, exit status 1.
func TestExecClosedPort(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "hms-node")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := closedPort(t)
	cfg := writeAdminConfig(t, addr, newCA(t))
	cli := func(args ...string) (stdout, stderr string, code int) {
		var o, e bytes.Buffer
		c := exec.Command(bin, args...)
		c.Stdout, c.Stderr = &o, &e
		c.Env = append(os.Environ(), "HMS_CONTROL=", "HMS_CONFIG="+cfg)
		err := c.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s: %v", args, err)
		}
		return o.String(), e.String(), c.ProcessState.ExitCode()
	}

	stdout, stderr, code := cli("list")
	want := "hms-node: list: cannot reach the control plane at " + addr + ": connection refused — is `hms-node control` running? check --control / HMS_CONTROL\n"
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("list: exit %d, stdout %q, stderr:\n%s\nwant exit 1 and:\n%s", code, stdout, stderr, want)
	}

	// A manifest of many documents says what it applies on stderr, even
	// when stderr is not a terminal; stdout keeps only the ✓ lines.
	var m strings.Builder
	for i := range manyDocuments {
		fmt.Fprintf(&m, "---\nname: svc-%d\nport: 7000\n", i)
	}
	f := filepath.Join(t.TempDir(), "big.yaml")
	os.WriteFile(f, []byte(m.String()), 0o644)
	stdout, stderr, code = cli("apply", "-f", f)
	want = fmt.Sprintf("applying %d services from %s (all or nothing)…\nhms-node: apply %s: cannot reach the control plane at %s: connection refused", manyDocuments, f, f, addr)
	if code != 1 || stdout != "" || !strings.HasPrefix(stderr, want) {
		t.Errorf("apply: exit %d, stdout %q, stderr:\n%s\nwant exit 1 and it to start:\n%s", code, stdout, stderr, want)
	}

	// A small one says nothing more than the reason.
	os.WriteFile(f, []byte("name: svc-a\nport: 7000\n"), 0o644)
	if _, stderr, _ = cli("apply", "-f", f); strings.Count(stderr, "\n") != 1 {
		t.Errorf("small apply: stderr:\n%s", stderr)
	}

	// A wrong command line: the usage, then the reason, exit 2.
	if _, stderr, code = cli("delete"); code != 2 || !strings.HasPrefix(stderr, "Usage:") || !strings.HasSuffix(stderr, "\nhms-node: accepts 1 arg(s), received 0\n") {
		t.Errorf("delete: exit %d, stderr:\n%s", code, stderr)
	}
}
