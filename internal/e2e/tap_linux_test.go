package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tappedCall is the part of `tap -o json` (one object per line) the tests
// rely on.
type tappedCall struct {
	Reporter           string `json:"reporter"`
	SourceWorkload     string `json:"source_workload"`
	DestinationService string `json:"destination_service"`
	Method             string `json:"method"`
	Path               string `json:"path"`
	Status             uint32 `json:"status"`
	LatencyUs          int64  `json:"latency_us"`
	TraceID            string `json:"trace_id"`
	Protocol           string `json:"protocol"`
	GRPCStatus         string `json:"grpc_status"`
}

// cliSplit runs a control-plane verb like cli, keeping stdout (what
// scripts parse) apart from stderr (notes for people).
func (c *controlProc) cliSplit(args ...string) (stdout, stderr string, err error) {
	args = append(args, "--config", filepath.Join(c.dir, "data", "admin.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	cmd := exec.CommandContext(ctx, hmsNode, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// mustCLI runs a control-plane verb that must succeed and returns its
// combined output.
func (c *controlProc) mustCLI(args ...string) string {
	c.t.Helper()
	out, err := c.cli(args...)
	if err != nil {
		c.t.Fatalf("hms-node %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// lockedBuffer is a process's output, read while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// streamingCLI is a long-running control-plane verb (tap --follow, tail).
type streamingCLI struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan error
}

// startCLI starts a verb in the background, bounded by within; the test's
// end kills it if it still runs.
func (c *controlProc) startCLI(t *testing.T, within time.Duration, args ...string) *streamingCLI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	args = append(args, "--config", filepath.Join(c.dir, "data", "admin.yaml"))
	s := &streamingCLI{cmd: exec.CommandContext(ctx, hmsNode, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait(); cancel() }()
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("hms-node %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), s.stdout, s.stderr)
		}
	})
	return s
}

// wait returns the process's exit within d; it fails the test if it runs
// on.
func (s *streamingCLI) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		return err
	case <-time.After(d):
		t.Fatalf("%s still runs after %s", s.cmd, d)
		return nil
	}
}

// Ten calls through the mesh, then `tap --last 10` lists exactly those,
// once each (as the caller's agent saw them); `tap --follow` and `tail`
// show new calls live and end cleanly on Ctrl-C; tail ends with an error
// when the control plane goes.
func TestPrivilegedTapAndTail(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: notify-svc\nport: 7000\nprotocol: http\n")
	client, _ := m.httpService(t, "notify-svc", "notify")

	var paths []string
	for i := 1; i <= 10; i++ {
		paths = append(paths, fmt.Sprintf("/call/%d", i))
	}
	for _, p := range paths {
		out, err := m.curlByName(t, client, "http://notify-svc.svc"+p)
		if err != nil || !strings.Contains(out, "path="+p) {
			t.Fatalf("call %s: %v %q", p, err, out)
		}
	}

	// Both reports of the last call must have reached the rings; until
	// then the last 10 may still hold the warm-up call.
	var calls []tappedCall
	var stdout, stderr string
	waitFor(t, 5*time.Second, "tap to list the 10 calls", func() bool {
		var err error
		stdout, stderr, err = m.control.cliSplit("tap", "notify-svc", "--last", "10", "-o", "json")
		if err != nil {
			t.Fatalf("tap -o json: %v\n%s%s", err, stdout, stderr)
		}
		calls = decodeCalls(t, stdout)
		return slices.Equal(pathsOf(calls), paths)
	})
	t.Logf("tap -o json (stderr %q):\n%s", stderr, stdout)
	if len(calls) != 10 {
		t.Fatalf("tap --last 10 gave %d calls, want 10", len(calls))
	}
	for _, c := range calls {
		// Each call once: the destination report pairs off with the source
		// report, which is kept.
		if c.Reporter != "source" || c.SourceWorkload != "default/client" || c.DestinationService != "default/notify-svc" ||
			c.Method != "GET" || c.Status != 200 || c.LatencyUs <= 0 || c.TraceID == "" {
			t.Fatalf("tapped call %+v, want a source report of default/client → default/notify-svc, GET, 200, latency > 0, a trace id", c)
		}
	}
	text := m.control.mustCLI("tap", "notify-svc", "--last", "10")
	t.Logf("tap:\n%s", text)
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Errorf("tap line of %d columns: %q", n, line)
		}
	}
	if lines := strings.Split(strings.TrimSpace(text), "\n"); len(lines) != 11 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("tap text: %d lines, want a header and 10 calls", len(lines))
	}
	for _, p := range paths {
		if !strings.Contains(text, " "+p+" ") {
			t.Fatalf("tap text misses %s", p)
		}
	}

	follow := m.control.startCLI(t, 60*time.Second, "tap", "notify-svc", "--follow", "-o", "json")
	tail := m.control.startCLI(t, 60*time.Second, "tail", "--service", "notify-svc")
	for _, s := range []*streamingCLI{follow, tail} {
		waitFor(t, 10*time.Second, "the follower to start", func() bool { return strings.Contains(s.stderr.String(), "Ctrl-C stops") })
	}
	if got := decodeCalls(t, follow.stdout.String()); len(got) != 0 {
		t.Fatalf("tap --follow without --last printed old calls: %+v", got)
	}
	live := []string{"/live/1", "/live/2", "/live/3"}
	for _, p := range live {
		if out, err := m.curlByName(t, client, "http://notify-svc.svc"+p); err != nil {
			t.Fatalf("call %s: %v %q", p, err, out)
		}
	}
	waitFor(t, 10*time.Second, "the live calls on tap --follow and tail", func() bool {
		fo, ta := follow.stdout.String(), tail.stdout.String()
		for _, p := range live {
			if !strings.Contains(fo, `"path":"`+p+`"`) || !strings.Contains(ta, `"GET `+p+` HTTP/1.1" 200 `) {
				return false
			}
		}
		return true
	})
	time.Sleep(1500 * time.Millisecond) // a destination report unpaired for a second would show now
	if got := pathsOf(decodeCalls(t, follow.stdout.String())); !slices.Equal(got, live) {
		t.Fatalf("tap --follow printed paths %v, want %v once each", got, live)
	}
	lines := strings.Split(strings.TrimSpace(tail.stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("tail printed %d lines, want 3:\n%s", len(lines), tail.stdout)
	}
	for i, l := range lines {
		for _, want := range []string{`"GET ` + live[i] + ` HTTP/1.1" 200 - `, " reporter=source ",
			" src=default/client dst=default/notify-svc ", " latency=", " retries=0 ", " trace="} {
			if !strings.Contains(l, want) {
				t.Fatalf("tail line %q lacks %q", l, want)
			}
		}
	}

	// Ctrl-C is a following tap's normal end.
	follow.cmd.Process.Signal(syscall.SIGINT)
	if err := follow.wait(t, 5*time.Second); err != nil {
		t.Fatalf("tap --follow after Ctrl-C: %v\n%s", err, follow.stderr)
	}
	// The control plane going away is not.
	m.control.stop()
	if err := tail.wait(t, 10*time.Second); err == nil || !strings.Contains(tail.stderr.String(), "the control plane went away") {
		t.Fatalf("tail after the control plane stopped: %v, stderr %q", err, tail.stderr)
	}
}

// `limit set` makes a burst get 429s with Retry-After, `limit clear`
// lifts it; `route set` gives one path its own timeout.
func TestPrivilegedTapTrafficRulesByCLI(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: notify-svc\nport: 7000\nprotocol: http\n")
	client, _ := m.httpService(t, "notify-svc", "notify")
	const url = "http://notify-svc.svc/burst"
	burst := func() (ok, limited, retryAfter, sent int) {
		r := m.load(t, client, url, 200, 1, 200*time.Millisecond) // 40 back to back
		return r.Codes["200"], r.Codes["429"], r.RetryAfter, r.Sent
	}
	if ok, limited, _, sent := burst(); limited != 0 || ok != sent {
		t.Fatalf("burst before any limit: %d of %d ok, %d limited", ok, sent, limited)
	}

	out := m.control.mustCLI("limit", "set", "notify-svc", "5rps")
	mustContain(t, out, "✓ Rate limit of default/notify-svc set to 5 rps")
	// The limit reaches the callee's agent as a registry delta after the
	// CLI returns: wait until a burst is limited.
	waitFor(t, 10*time.Second, "the limit to apply", func() bool {
		ok, limited, retryAfter, sent := burst()
		if limited > 0 && (ok+limited != sent || retryAfter != limited) {
			t.Fatalf("limited burst: %d ok + %d limited of %d, %d with Retry-After", ok, limited, sent, retryAfter)
		}
		return limited > 0 && ok <= 10
	})
	if out, err := m.control.cli("limit", "set", "notify-svc", "5"); err == nil || !strings.Contains(out, "such as 50rps") {
		t.Fatalf("limit set 5: %v %q, want a refusal naming the form 50rps", err, out)
	}

	mustContain(t, m.control.mustCLI("limit", "clear", "notify-svc"), "✓ Rate limit of default/notify-svc cleared")
	waitFor(t, 10*time.Second, "the limit to go", func() bool { _, limited, _, _ := burst(); return limited == 0 })
	if ok, limited, _, sent := burst(); limited != 0 || ok != sent {
		t.Fatalf("burst after limit clear: %d of %d ok, %d limited", ok, sent, limited)
	}
	if out, err := m.control.cli("limit", "clear", "notify-svc"); err == nil || !strings.Contains(out, "has no rate limit") {
		t.Fatalf("second limit clear: %v %q", err, out)
	}

	if code, _, _ := m.curlStatus(t, client, "http://notify-svc.svc/delay/300ms"); code != 200 {
		t.Fatalf("/delay/300ms before the route: %d", code)
	}
	if out, err := m.control.cli("route", "set", "notify-svc", "--path", "/delay/300ms", "--retries", "0"); err == nil ||
		!strings.Contains(out, "neither a timeout nor retries") {
		t.Fatalf("route set --retries 0 alone: %v %q", err, out)
	}
	out = m.control.mustCLI("route", "set", "notify-svc", "--path", "/delay/300ms", "--timeout", "100ms")
	mustContain(t, out, "✓ Route default/notify-svc /delay/300ms set: timeout 100ms")
	waitFor(t, 10*time.Second, "the route to apply", func() bool {
		code, _, h := m.curlStatus(t, client, "http://notify-svc.svc/delay/300ms")
		return code == 504 && strings.Contains(strings.ToLower(h), "x-hms-timeout: 100ms")
	})
	if code, _, h := m.curlStatus(t, client, "http://notify-svc.svc/delay/200ms"); code != 200 {
		t.Fatalf("another path keeps no timeout: %d\n%s", code, h)
	}
}

func decodeCalls(t *testing.T, jsonLines string) []tappedCall {
	t.Helper()
	var calls []tappedCall
	for _, l := range strings.Split(jsonLines, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var c tappedCall
		if err := json.Unmarshal([]byte(l), &c); err != nil {
			t.Fatalf("tap -o json line %q: %v", l, err)
		}
		calls = append(calls, c)
	}
	return calls
}

func pathsOf(calls []tappedCall) []string {
	var ps []string
	for _, c := range calls {
		ps = append(ps, c.Path)
	}
	return ps
}
