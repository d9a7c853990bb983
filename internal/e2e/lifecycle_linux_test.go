package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testapp"
	"github.com/hms-node/hms-node/internal/testbed"
)

const gib = 1 << 30

// A 1 GiB transfer each way through the agent arrives intact, with the
// sk_msg acceleration on and off.
func TestPrivilegedBulkGiBIntact(t *testing.T) {
	want := testapp.PatternSum(gib)
	for _, accel := range []string{"true", "false"} {
		t.Run("accel="+accel, func(t *testing.T) {
			s := newSameNode(t, "--accel="+accel)
			bulk := s.node.MustAddPod(t, "bulk")
			startServer(t, bulk, 7000, testApp, "bulk-server", "--addr", ":7000")
			s.agent.enroll(bulk, "bulk", 7000)
			before := s.agent.counters()
			for _, dir := range []string{"down", "up"} {
				out, err := run(t, s.client, testApp, "bulk", "--addr", fmt.Sprintf("%s:7000", bulk.IP), "--dir", dir, "--bytes", fmt.Sprint(gib))
				if err != nil {
					t.Fatalf("bulk %s: %v\n%s", dir, err, out)
				}
				var res struct {
					Sha256 string  `json:"sha256"`
					Bytes  int64   `json:"bytes"`
					MBps   float64 `json:"mbps"`
				}
				if err := json.Unmarshal([]byte(out), &res); err != nil {
					t.Fatalf("bulk %s output %q: %v", dir, out, err)
				}
				if res.Bytes != gib || res.Sha256 != want {
					t.Fatalf("bulk %s: %d bytes, sha256 %s; want %d, %s", dir, res.Bytes, res.Sha256, gib, want)
				}
				t.Logf("bulk %s accel=%s: %.0f MB/s", dir, accel, res.MBps)
			}
			after := s.agent.counters()
			if after["redirected"] < before["redirected"]+2 {
				t.Fatalf("transfers were not intercepted: %v -> %v", before, after)
			}
			redirectedMsgs := after["msg_redirected"] > before["msg_redirected"]
			if redirectedMsgs != (accel == "true") {
				t.Fatalf("accel=%s but msg_redirected %d -> %d", accel, before["msg_redirected"], after["msg_redirected"])
			}
			t.Logf("shortcut_on %d -> %d, msg_shortcut %d -> %d", before["shortcut_on"], after["shortcut_on"], before["msg_shortcut"], after["msg_shortcut"])
		})
	}
}

// A new agent started beside the running one takes over its sockets and
// state; the old one drains. Nothing fails meanwhile.
func TestPrivilegedAgentUpgradeDropsNothing(t *testing.T) {
	s := newSameNode(t)
	echo := s.node.MustAddPod(t, "echo")
	startServer(t, echo, 7000, testApp, "echo", "--addr", ":7000")
	s.agent.enroll(echo, "echo", 7000)
	old := s.agent.cmd

	// A long-lived connection carried by the old agent (400 round trips
	// 10 ms apart, so it spans the upgrade), and new connections every
	// 10 ms from an enrolled client and from a pod outside the mesh.
	long := s.client.Command(ctxT(t, 2*time.Minute), testApp, "rr", "--addr", fmt.Sprintf("%s:7000", echo.IP), "--n", "400", "--pause", "10ms")
	var longOut strings.Builder
	long.Stdout = &longOut
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	loops := map[string]*exec.Cmd{}
	outs := map[string]*strings.Builder{}
	for name, pod := range map[string]*testbed.Pod{"outbound": s.client, "inbound": s.bystander} {
		c := pod.Command(ctxT(t, time.Minute), testApp, "loop", "--addr", fmt.Sprintf("%s:8080", s.server.IP),
			"--want", "hello-from-server", "--interval", "10ms", "--duration", "4s")
		outs[name] = &strings.Builder{}
		c.Stdout = outs[name]
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		loops[name] = c
	}
	time.Sleep(time.Second)
	s.agent.start() // the successor: same flags, same socket
	waitExit(t, old, 20*time.Second)

	for name, c := range loops {
		if err := c.Wait(); err != nil {
			t.Fatalf("%s loop: %v", name, err)
		}
		var res testapp.LoopResult
		if err := json.Unmarshal([]byte(outs[name].String()), &res); err != nil {
			t.Fatalf("%s loop output %q: %v", name, outs[name], err)
		}
		t.Logf("%s connections during the upgrade: %d ok, %d failed", name, res.OK, res.Failed)
		if res.Failed != 0 || res.OK < 100 {
			t.Fatalf("%s: %d ok, %d failed %v; want zero failures", name, res.OK, res.Failed, res.Errors)
		}
	}
	if err := long.Wait(); err != nil {
		t.Fatalf("long-lived connection across the upgrade: %v", err)
	}
	if !strings.Contains(longOut.String(), `"count":400`) {
		t.Fatalf("long-lived connection did not finish all round trips: %s", longOut.String())
	}
	if st, err := s.agent.status(); err != nil || len(st.Workloads) != 3 {
		t.Fatalf("successor status: %v, %+v", err, st.Workloads)
	}
}

// After a SIGKILL pods fail closed; a new agent serves them again from the
// persisted state, without re-enrollment.
func TestPrivilegedCrashFailsClosedAndRecovers(t *testing.T) {
	s := newSameNode(t)
	if out, err := curl(t, s.client, s.url); err != nil {
		t.Fatalf("before the crash: %v\n%s", err, out)
	}
	s.agent.cmd.Process.Signal(syscall.SIGKILL)
	s.agent.cmd.Wait()

	// Plaintext from outside the mesh to the workload port is refused at
	// once, and the enrolled client cannot bypass the agent.
	out, err := curl(t, s.bystander, s.url)
	if err == nil || !strings.Contains(out, "(7) Failed to connect") {
		t.Fatalf("inbound with the agent dead: err=%v out=%q; want refused", err, out)
	}
	out, err = curl(t, s.client, s.url)
	if err == nil || strings.Contains(out, "hello-from-server") {
		t.Fatalf("outbound with the agent dead reached the server: %q", out)
	}

	s.agent.start()
	for name, pod := range map[string]*testbed.Pod{"client": s.client, "bystander": s.bystander} {
		out, err := curl(t, pod, s.url)
		if err != nil {
			t.Fatalf("%s after restart: %v\n%s", name, err, out)
		}
		mustContain(t, out, "hello-from-server")
	}
	st, err := s.agent.status()
	if err != nil || len(st.Workloads) != 2 {
		t.Fatalf("restored workloads: %v %+v", err, st.Workloads)
	}
}

// Without privileges the agent says what is missing, not a stack trace.
func TestPrivilegedMissingPrivilegesExplained(t *testing.T) {
	testbed.RequirePrivileged(t)
	cmd := exec.Command(hmsNode, "agent", "--node", "x", "--bpffs", "/sys/fs/bpf/hms-noperm", "--cgroup-root", "/tmp",
		"--socket", t.TempDir()+"/a.sock", "--state-dir", t.TempDir(), "--metrics-addr", "off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("agent ran without privileges: %s", out)
	}
	for _, want := range []string{"missing privilege CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"} {
		mustContain(t, string(out), want)
	}
	if strings.Contains(string(out), "goroutine") || strings.Contains(string(out), "panic") {
		t.Fatalf("stack trace instead of a message: %s", out)
	}
}

func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(within):
		t.Fatalf("old agent still running %s after the successor started", within)
	}
}
