package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// doctorReport is `hms-node doctor -o json`.
type doctorReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Check  string `json:"check"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
		Fix    string `json:"fix"`
	} `json:"checks"`
}

// doctorChecks are the checks doctor runs, in order.
var doctorChecks = []string{"kernel version", "bpf syscall", "cgroup bpf", "btf", "sockmap", "sk_lookup",
	"cgroup2", "bpffs", "capabilities", "agent socket", "leftover pins", "control plane", "clock skew"}

// doctorRun runs doctor (through wrap, e.g. unshare, when given) against
// an agent and a control plane, in text (logged) and in JSON. It checks
// the exit status against the report and returns the failed checks.
func doctorRun(t *testing.T, what string, wrap []string, args ...string) []string {
	t.Helper()
	run := func(extra ...string) (string, int) {
		argv := append(append(append([]string{}, wrap...), hmsNode, "doctor"), append(args, extra...)...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return string(out), 0
		case errors.As(err, &ee):
			return string(out), ee.ExitCode()
		}
		t.Fatalf("doctor (%s): %v\n%s", what, err, out)
		return "", 0
	}
	text, code := run()
	t.Logf("hms-node doctor, %s (exit %d):\n%s", what, code, text)
	out, jcode := run("-o", "json")
	// The JSON goes to stdout and the one-line reason to stderr: cut the
	// reason off.
	body := out
	if i := strings.LastIndex(out, "\nhms-node: "); i >= 0 {
		body = out[:i+1]
	}
	var rep doctorReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("doctor -o json (%s): %v\n%s", what, err, out)
	}
	var names, failed []string
	for _, c := range rep.Checks {
		names = append(names, c.Check)
		if !c.OK {
			failed = append(failed, c.Check)
			if c.Fix == "" || !strings.Contains(text, "FAIL") {
				t.Errorf("%s: failed check %s has no fix: %+v", what, c.Check, c)
			}
		}
	}
	if !slices.Equal(names, doctorChecks) {
		t.Errorf("%s: checks %q, want %q", what, names, doctorChecks)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	wantCode := 0
	if len(failed) > 0 {
		wantCode = 1
		want := fmt.Sprintf("hms-node: %d of %d checks failed (%s)", len(failed), len(doctorChecks), strings.Join(failed, ", "))
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, want) {
			t.Errorf("%s: last line %q, want it to start %q", what, last, want)
		}
		lines = lines[:len(lines)-1]
	}
	if code != wantCode || jcode != wantCode || rep.OK != (wantCode == 0) {
		t.Errorf("%s: exit %d (json %d, ok %v) with failed %q", what, code, jcode, rep.OK, failed)
	}
	for i, l := range lines { // one line per check, OK or FAIL first, then its name
		f := strings.Fields(l)
		if i >= len(doctorChecks) || len(f) < 2 || !strings.HasPrefix(strings.TrimSpace(l[len(f[0]):]), doctorChecks[i]) ||
			(f[0] == "OK") == slices.Contains(failed, doctorChecks[i]) {
			t.Errorf("%s: line %d %q", what, i+1, l)
		}
	}
	return failed
}

func wantFailed(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: failed checks %q, want %q", what, got, want)
	}
}

// doctor on a healthy node, then with bpffs unmounted (in a mount
// namespace of its own: the machine is untouched), with --bpffs outside
// any bpffs, with the agent killed (its pins left behind), and with the
// control plane stopped: each time exactly the checks concerned fail.
func TestPrivilegedDoctor(t *testing.T) {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	control := newControl(t, "--http-addr", httpAddr)
	node := bed.MustAddNode(t, "n1")
	a := newAgent(t, node, append(control.agentFlags(), "--dns-upstream", startFakeUpstream(t))...)
	a.start()
	base := []string{"--socket", a.socket, "--bpffs", a.bpffs, "--cgroup-root", node.CgroupDir,
		"--config", filepath.Join(control.dir, "data", "admin.yaml"), "--http-addr", httpAddr}

	wantFailed(t, "healthy node", doctorRun(t, "healthy node", nil, base...))

	unmounted := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", `umount -l /sys/fs/bpf && exec "$0" "$@"`}
	wantFailed(t, "bpffs unmounted", doctorRun(t, "bpffs unmounted (private mount namespace)", unmounted, base...), "bpffs")

	notBPF := slices.Clone(base)
	notBPF[3] = filepath.Join(t.TempDir(), "hms") // --bpffs on the test's tmpfs
	wantFailed(t, "--bpffs outside a bpffs", doctorRun(t, "--bpffs outside a bpffs", nil, notBPF...), "bpffs")

	a.kill()
	wantFailed(t, "agent killed", doctorRun(t, "agent killed", nil, base...), "agent socket", "leftover pins")
	a.start() // the new agent takes its pins over
	wantFailed(t, "agent restarted", doctorRun(t, "agent restarted", nil, base...))

	control.stop()
	wantFailed(t, "control plane stopped", doctorRun(t, "control plane stopped", nil, base...), "control plane", "clock skew")
}
