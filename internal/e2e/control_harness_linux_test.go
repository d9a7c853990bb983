package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// controlProc is one running `hms-node control` with an embedded etcd.
type controlProc struct {
	t       testing.TB
	dir     string
	addr    string
	args    []string
	cmd     *exec.Cmd
	logPath string
}

// freePort returns a loopback TCP port nobody listens on right now, for a
// process the test starts to listen on. It is drawn from below the
// kernel's ephemeral range: a port the kernel hands out (listen on :0)
// can be taken again as the local port of any outgoing connection before
// the process binds it (seen in CI: the control plane's own etcd client
// got its HTTP port). No port is handed out twice in one test binary.
func freePort(t testing.TB) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	minPort := max(1024, lo-16384)
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 500 {
		p := minPort + rand.IntN(lo-minPort)
		if portsGiven[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free loopback port below %d", lo)
	return 0
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// heartbeat of the control planes in tests: instances of a dead agent
// vanish after three of them.
const heartbeat = 300 * time.Millisecond

// newControl starts a control plane; extra flags are appended (e.g.
// --cert-ttl).
func newControl(t testing.TB, extra ...string) *controlProc {
	t.Helper()
	dir := t.TempDir()
	c := &controlProc{t: t, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), logPath: filepath.Join(dir, "control.log")}
	c.args = []string{"control", "--data-dir", filepath.Join(dir, "data"), "--listen", c.addr, "--http-addr", "off",
		"--etcd-client-port", fmt.Sprint(freePort(t)), "--etcd-peer-port", fmt.Sprint(freePort(t)),
		"--heartbeat", heartbeat.String()}
	c.args = append(c.args, extra...)
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			b, _ := os.ReadFile(c.logPath)
			t.Logf("control-plane log:\n%s", b)
		}
	})
	c.start()
	return c
}

func (c *controlProc) start() {
	c.t.Helper()
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(hmsNode, c.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "HOME="+c.dir) // ~/.hms/config of this test only
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.cli("list", "-o", "json"); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("control plane did not answer on %s within 30s", c.addr)
}

func (c *controlProc) stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
		c.cmd = nil
	}
}

// cli runs a control-plane verb of the CLI against this control plane,
// with the admin credential it wrote.
func (c *controlProc) cli(args ...string) (string, error) {
	args = append(args, "--config", filepath.Join(c.dir, "data", "admin.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, hmsNode, args...).CombinedOutput()
	return string(out), err
}

// listJSON is `list -o json` (DESIGN §7).
type listJSON struct {
	Services []struct {
		Name      string   `json:"name"`
		Namespace string   `json:"namespace"`
		VIP       string   `json:"vip"`
		Ports     []uint32 `json:"ports"`
		Protocol  string   `json:"protocol"`
		Instances []struct {
			Node    string `json:"node"`
			IP      string `json:"ip"`
			Port    uint32 `json:"port"`
			Healthy bool   `json:"healthy"`
		} `json:"instances"`
	} `json:"services"`
}

func (c *controlProc) list() (listJSON, string) {
	c.t.Helper()
	out, err := c.cli("list", "-o", "json")
	if err != nil {
		c.t.Fatalf("list: %v\n%s", err, out)
	}
	var l listJSON
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		c.t.Fatalf("list output %q: %v", out, err)
	}
	return l, out
}

// healthyInstances counts the healthy instances of a service in list.
func (c *controlProc) healthyInstances(svc string) int {
	l, _ := c.list()
	n := 0
	for _, s := range l.Services {
		if s.Name == svc {
			for _, in := range s.Instances {
				if in.Healthy {
					n++
				}
			}
		}
	}
	return n
}

// waitFor polls cond every 100 ms until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
}

func (c *controlProc) apply(manifest string) string {
	c.t.Helper()
	f := filepath.Join(c.t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o644); err != nil {
		c.t.Fatal(err)
	}
	out, err := c.cli("apply", "-f", f)
	if err != nil {
		c.t.Fatalf("apply: %v\n%s", err, out)
	}
	return out
}

// token creates a join token and writes it to a file for an agent's
// --token-file.
func (c *controlProc) token() string {
	c.t.Helper()
	out, err := c.cli("token", "create", "--ttl", "10m")
	if err != nil {
		c.t.Fatalf("token create: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "hms1.") {
		c.t.Fatalf("token create printed %q; want the token alone on one line", out)
	}
	f := filepath.Join(c.t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(lines[0]+"\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return f
}

// agentFlags are the flags of an agent joining this control plane.
func (c *controlProc) agentFlags() []string {
	return []string{"--control", c.addr, "--token-file", c.token()}
}
