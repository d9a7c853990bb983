package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
	"github.com/hms-node/hms-node/pkg/agent"
)

// Binaries built once per test run by TestMain (privileged runs only).
var hmsNode, testApp string

func TestMain(m *testing.M) {
	if os.Getenv("HMS_TEST_PRIVILEGED") == "1" && os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "hms-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Chmod(dir, 0o755) // the privilege test runs the agent as nobody
		hmsNode, testApp = filepath.Join(dir, "hms-node"), filepath.Join(dir, "hms-testapp")
		for out, pkg := range map[string]string{hmsNode: "../../cmd/hms-node", testApp: "../testapp/cmd/hms-testapp"} {
			if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
				os.Exit(1)
			}
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// agentProc is one running `hms-node agent` of a simulated node.
type agentProc struct {
	t      testing.TB
	node   *testbed.Node
	dir    string // state, socket, log
	bpffs  string
	socket string
	args   []string
	cmd    *exec.Cmd
	log    *os.File
}

// newAgent prepares the flags of a node's agent: its own cgroup root, pins,
// state dir and socket, so several agents share the kernel untouched.
func newAgent(t testing.TB, node *testbed.Node, extra ...string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	a := &agentProc{t: t, node: node, dir: dir,
		bpffs:  "/sys/fs/bpf/" + filepath.Base(node.Netns),
		socket: filepath.Join(dir, "agent.sock"),
	}
	a.args = append([]string{"agent", "--node", node.Name, "--cgroup-root", node.CgroupDir,
		"--bpffs", a.bpffs, "--state-dir", filepath.Join(dir, "state"), "--socket", a.socket,
		"--metrics-addr", "off", "--drain-timeout", "10s"}, extra...)
	t.Cleanup(func() {
		if t.Failed() {
			if st, err := a.status(); err == nil {
				t.Logf("counters of %s at failure: %v", node.Name, st.Datapath.Counters)
			}
		}
		a.kill()
		out, err := exec.Command(hmsNode, "agent", "--cleanup", "--bpffs", a.bpffs).CombinedOutput()
		if err != nil {
			t.Errorf("agent --cleanup: %v\n%s", err, out)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
			t.Logf("agent log of %s:\n%s", node.Name, b)
		}
	})
	return a
}

// start runs a new agent process with the prepared flags and waits until
// its local API answers.
func (a *agentProc) start() *exec.Cmd {
	a.t.Helper()
	logf, err := os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(hmsNode, a.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if n := os.Getenv("HMS_AGENT_GOMAXPROCS"); n != "" { // benchmarks: the agents alone, not the load tools
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+n)
	}
	if err := cmd.Start(); err != nil {
		a.t.Fatal(err)
	}
	a.cmd, a.log = cmd, logf
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := a.status(); err == nil {
			return cmd
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("agent of %s did not answer on %s within 20s", a.node.Name, a.socket)
	return nil
}

func (a *agentProc) kill() {
	if a.cmd != nil && a.cmd.Process != nil {
		a.cmd.Process.Kill()
		a.cmd.Wait()
	}
}

// cli runs an hms-node verb against this agent.
func (a *agentProc) cli(args ...string) (string, error) {
	args = append(args, "--socket", a.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, hmsNode, args...).CombinedOutput()
	return string(out), err
}

func (a *agentProc) status() (agent.Status, error) {
	var st agent.Status
	out, err := a.cli("status", "-o", "json")
	if err != nil {
		return st, fmt.Errorf("%v: %s", err, out)
	}
	return st, json.Unmarshal([]byte(out), &st)
}

func (a *agentProc) counters() map[string]uint64 {
	a.t.Helper()
	st, err := a.status()
	if err != nil {
		a.t.Fatal(err)
	}
	return st.Datapath.Counters
}

func (a *agentProc) enroll(p *testbed.Pod, service string, ports ...int) {
	a.t.Helper()
	args := []string{"enroll", "--netns", p.NetnsPath, "--service", service}
	for _, port := range ports {
		args = append(args, "--port", fmt.Sprint(port))
	}
	if out, err := a.cli(args...); err != nil {
		a.t.Fatalf("enroll %s: %v\n%s", p.Name, err, out)
	}
}

// run runs a command in a pod with a bounded time and returns its output.
func run(t testing.TB, p *testbed.Pod, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return p.Run(ctx, name, args...)
}

// startServer starts a long-running process in a pod and waits until addr
// accepts connections from inside the pod.
func startServer(t testing.TB, p *testbed.Pod, port int, name string, args ...string) {
	t.Helper()
	if _, err := p.Start(context.Background(), name, args...); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := run(t, p, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port)); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("server on %s:%d did not come up", p.Name, port)
}

func curl(t testing.TB, p *testbed.Pod, url string) (string, error) {
	return run(t, p, "curl", "-sS", "--max-time", "5", url)
}

func mustContain(t testing.TB, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q, want it to contain %q", got, want)
	}
}

// ctxT is a context bounded in time and cancelled at the end of the test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
