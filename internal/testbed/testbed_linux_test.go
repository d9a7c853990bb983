package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/cgroupv2"
)

// helperEnv makes the test binary act as a tiny network tool when a pod runs
// it: "serve ADDR REPLY" answers every connection with REPLY, "dial ADDR
// [fast]" prints what the server sent (with "fast", failing a connect that
// needed a SYN retransmit).
const helperEnv = "HMS_TESTBED_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helper(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func helper(args []string) int {
	switch {
	case len(args) == 3 && args[0] == "serve":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("ready")
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			io.WriteString(c, args[2])
			c.Close()
		}
	case len(args) >= 2 && args[0] == "dial":
		start := time.Now()
		c, err := net.DialTimeout("tcp", args[1], 3*time.Second)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		if d := time.Since(start); len(args) == 3 && args[2] == "fast" && d > 700*time.Millisecond {
			fmt.Printf("connect took %v: a SYN was lost\n", d)
			return 1
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		fmt.Print(string(b))
		if err != nil {
			return 1
		}
		return 0
	}
	fmt.Println("bad helper args:", args)
	return 2
}

// helperCmd runs the test binary as a helper inside p.
func helperCmd(ctx context.Context, p *Pod, args ...string) *exec.Cmd {
	cmd := p.Command(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	return cmd
}

// serve starts a server in p on port that answers with reply, and waits until
// it listens.
func serve(t *testing.T, p *Pod, port int, reply string) *exec.Cmd {
	t.Helper()
	cmd := helperCmd(t.Context(), p, "serve", fmt.Sprintf("%s:%d", p.IP, port), reply)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("server in %s: %q, %v", p.Name, line, err)
	}
	return cmd
}

// dial connects from p to addr and returns what the server sent.
func dial(t *testing.T, p *Pod, addr string) (string, error) {
	t.Helper()
	out, err := helperCmd(t.Context(), p, "dial", addr).CombinedOutput()
	return string(out), err
}

func expectReply(t *testing.T, from, to *Pod, reply string) {
	t.Helper()
	got, err := dial(t, from, fmt.Sprintf("%s:8080", to.IP))
	if err != nil || got != reply {
		t.Fatalf("%s -> %s (%s): got %q, %v; want %q", from.Name, to.Name, to.IP, got, err, reply)
	}
}

func TestPrivilegedTestbedSameNode(t *testing.T) {
	RequirePrivileged(t)
	b := New(t)
	n := b.MustAddNode(t, "n1")
	a, c := n.MustAddPod(t, "a"), n.MustAddPod(t, "c")
	serve(t, a, 8080, "hello from a")
	expectReply(t, c, a, "hello from a")
}

func TestPrivilegedTestbedCrossNode(t *testing.T) {
	RequirePrivileged(t)
	b := New(t)
	p1 := b.MustAddNode(t, "n1").MustAddPod(t, "web")
	p2 := b.MustAddNode(t, "n2").MustAddPod(t, "client")
	serve(t, p1, 8080, "web on n1")
	// The first connection must not lose its SYN to a bridge port that
	// linkwatch has not enabled yet: the helper fails a connect slower
	// than a SYN retransmit.
	got, err := helperCmd(t.Context(), p2, "dial", p1.IP.String()+":8080", "fast").CombinedOutput()
	if err != nil || string(got) != "web on n1" {
		t.Fatalf("first cross-node connection: %q, %v", got, err)
	}
	// A node added later gets routes both ways.
	p3 := b.MustAddNode(t, "n3").MustAddPod(t, "late")
	serve(t, p3, 8080, "late on n3")
	expectReply(t, p3, p1, "web on n1")
	expectReply(t, p1, p3, "late on n3")
}

func TestPrivilegedTestbedNoDefaultRoute(t *testing.T) {
	RequirePrivileged(t)
	b := New(t)
	p := b.MustAddNode(t, "n1").MustAddPod(t, "a")
	out, err := p.Run(t.Context(), "ip", "-4", "route", "show", "default")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("default route in pod: %q, %v", out, err)
	}
	// A route lookup sends nothing; it must find no way out.
	out, err = p.Run(t.Context(), "ip", "route", "get", "192.0.2.1")
	if err == nil || !strings.Contains(out, "unreachable") {
		t.Fatalf("route to an outside address: %q, %v", out, err)
	}
	out, err = p.Run(t.Context(), "ip", "-4", "route", "show")
	if err != nil || !strings.Contains(out, PodRange.String()+" via "+p.Node.Gateway.String()) {
		t.Fatalf("pod routes: %q, %v", out, err)
	}
}

func TestPrivilegedTestbedPodCgroupAndNetns(t *testing.T) {
	RequirePrivileged(t)
	b := New(t)
	p := b.MustAddNode(t, "n1").MustAddPod(t, "a")
	cmd := serve(t, p, 8080, "x")
	mnt, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := "0::/" + strings.TrimPrefix(p.CgroupDir, mnt+"/") + "\n"
	if !strings.Contains(string(data), want) {
		t.Fatalf("pod process cgroup:\n%s\nwant line %q", data, want)
	}
	var got, ns syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), &got); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(p.NetnsPath, &ns); err != nil {
		t.Fatal(err)
	}
	if got.Ino != ns.Ino {
		t.Fatalf("pod process netns inode %d, pod netns %d", got.Ino, ns.Ino)
	}
}

func TestPrivilegedTestbedVIPBlackholed(t *testing.T) {
	RequirePrivileged(t)
	b := New(t)
	n := b.MustAddNode(t, "n1")
	p := n.MustAddPod(t, "a")
	start := time.Now()
	out, err := dial(t, p, "240.240.0.1:80")
	if err == nil || !strings.Contains(out, "invalid argument") || time.Since(start) > 2*time.Second {
		t.Fatalf("connect to a VIP from a pod: %q, %v after %v; want an immediate route error", out, err, time.Since(start))
	}
	for _, ns := range []string{n.nsName, p.nsName, b.fabric} {
		out, err := exec.Command("ip", "-n", ns, "route", "show", "exact", VIPRange.String()).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "blackhole "+VIPRange.String()) {
			t.Errorf("netns %s: %q, %v", ns, out, err)
		}
	}
	rs, err := vipRoutes()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rs {
		found = found || r.blackhole()
	}
	if !found {
		t.Fatalf("root netns: no blackhole for %s: %+v", VIPRange, rs)
	}
}

// leftovers lists what of bed id still exists: netns, its cgroup dir and a
// root-netns route owned by this process.
func leftovers(t *testing.T, id, cgDir string, pid int) []string {
	t.Helper()
	var left []string
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id+"-") {
			left = append(left, "netns "+e.Name())
		}
	}
	if _, err := os.Stat(cgDir); !errors.Is(err, os.ErrNotExist) {
		left = append(left, "cgroup "+cgDir)
	}
	rs, err := vipRoutes()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.ours() && r.Metric == pid {
			left = append(left, fmt.Sprintf("route %+v", r))
		}
	}
	return left
}

func TestPrivilegedTestbedCloseRemovesEverything(t *testing.T) {
	RequirePrivileged(t)
	b, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	n1, n2 := b.MustAddNode(t, "n1"), b.MustAddNode(t, "n2")
	n1.MustAddPod(t, "a")
	p := n2.MustAddPod(t, "b")
	sleeper, err := p.Start(context.Background(), "sh", "-c", "sleep 600 & sleep 600")
	if err != nil {
		t.Fatal(err)
	}
	if !rootRouteAdded() {
		t.Log("root netns already had a blackhole for the VIP range; the bed added none")
	}
	if left := leftovers(t, b.ID(), b.CgroupDir(), os.Getpid()); len(left) < 5 {
		t.Fatalf("bed incomplete before Close: %v", left)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := sleeper.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("process in pod after Close: %v", err)
	}
	if left := leftovers(t, b.ID(), b.CgroupDir(), os.Getpid()); len(left) > 0 {
		t.Fatalf("left after Close: %v", left)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.AddNode("n3"); !errors.Is(err, errClosed) {
		t.Errorf("AddNode after Close: %v", err)
	}
	if _, err := p.Start(context.Background(), "true"); !errors.Is(err, errClosed) {
		t.Errorf("Start after Close: %v", err)
	}
}

func TestPrivilegedTestbedSweepsCrashedRun(t *testing.T) {
	RequirePrivileged(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := dead.Process.Pid
	id := bedID(DefaultPrefix, pid, 1)
	mnt, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg := filepath.Join(mnt, id)
	if err := os.MkdirAll(filepath.Join(cg, "n1", "p1"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroupTree(cg) })
	stray := exec.Command("sleep", "600")
	stray.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true}
	fd, err := os.Open(filepath.Join(cg, "n1", "p1"))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	stray.SysProcAttr.CgroupFD = int(fd.Fd())
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{id + "-fab", id + "-n1"} {
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ip("netns", "del", ns) })
	}
	if err := ip(rootRouteArgs("add", pid)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { delRootRoute(pid) })
	if left := leftovers(t, id, cg, pid); len(left) != 4 {
		t.Fatalf("crashed run not simulated: %v", left)
	}
	if err := Sweep(DefaultPrefix); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if left := leftovers(t, id, cg, pid); len(left) > 0 {
		t.Fatalf("left after Sweep: %v", left)
	}
	if err := stray.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("process in a crashed run's cgroup: %v", err)
	}
}
