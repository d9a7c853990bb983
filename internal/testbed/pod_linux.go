package testbed

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// AddPod adds a pod to the node: a netns with lo up and eth0 on the node's
// bridge, the next free address of the node's subnet, a route for
// 10.250.0.0/16 via the node and no default route, and a cgroup dir.
func (n *Node) AddPod(name string) (*Pod, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	b := n.bed
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	for _, p := range n.pods {
		if p.Name == name {
			return nil, fmt.Errorf("add pod %s/%s: name in use", n.Name, name)
		}
	}
	n.podSeq++
	addr, err := podAddr(n.Subnet, n.podSeq)
	if err != nil {
		return nil, err
	}
	p := &Pod{
		Name:      name,
		Node:      n,
		IP:        addr,
		CgroupDir: filepath.Join(n.CgroupDir, name),
		idx:       n.podSeq,
		nsName:    fmt.Sprintf("%s-n%dp%d", b.id, n.idx, n.podSeq),
	}
	p.NetnsPath = filepath.Join(netnsDir, p.nsName)
	if err := os.Mkdir(p.CgroupDir, 0o755); err != nil {
		return nil, fmt.Errorf("add pod %s/%s: create cgroup: %w", n.Name, name, err)
	}
	if p.cgFD, err = os.Open(p.CgroupDir); err != nil {
		return nil, fmt.Errorf("add pod %s/%s: %w", n.Name, name, err)
	}
	if err := b.buildPodLocked(p); err != nil {
		p.cgFD.Close()
		return nil, fmt.Errorf("add pod %s/%s: %w", n.Name, name, err)
	}
	n.pods = append(n.pods, p)
	return p, nil
}

// MustAddPod is AddPod that fails t on error.
func (n *Node) MustAddPod(t testing.TB, name string) *Pod {
	t.Helper()
	p, err := n.AddPod(name)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	return p
}

// Pods returns the node's pods, in order.
func (n *Node) Pods() []*Pod {
	n.bed.mu.Lock()
	defer n.bed.mu.Unlock()
	return append([]*Pod(nil), n.pods...)
}

func (b *Bed) buildPodLocked(p *Pod) error {
	n := p.Node
	if err := b.addNetnsLocked(p.nsName); err != nil {
		return err
	}
	// Both ends are created in their namespaces, so nothing ever appears in
	// the root netns; the pod end is eth0 from the start. See waitUp for why
	// the ends get distinct fixed ifindexes.
	host := ifName(b.tag, 'p', n.idx, p.idx)
	err := ipAll(n.nsName,
		[]string{"link", "add", host, "index", strconv.Itoa(1000 + p.idx), "type", "veth",
			"peer", "name", "eth0", "index", "2", "netns", p.nsName},
		[]string{"link", "set", host, "master", n.bridge, "up"})
	if err != nil {
		return err
	}
	err = ipAll(p.nsName,
		[]string{"addr", "add", netip24(p.IP), "dev", "eth0"},
		[]string{"link", "set", "eth0", "up"},
		[]string{"route", "add", PodRange.String(), "via", n.Gateway.String(), "dev", "eth0"})
	if err != nil {
		return err
	}
	for _, l := range [][2]string{{n.nsName, host}, {p.nsName, "eth0"}, {n.nsName, n.bridge}} {
		if err := waitUp(l[0], l[1]); err != nil {
			return err
		}
	}
	return nil
}

// Command returns a command that runs name inside the pod: it is cloned
// straight into the pod's cgroup (CLONE_INTO_CGROUP, so cgroup BPF programs
// see it from its first instruction) and nsenter switches it into the pod's
// netns before exec (unlike `ip netns exec`, nsenter leaves /sys alone). It
// runs in its own process group, which ctx cancellation and Close kill.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	b := p.Node.bed
	argv := append([]string{"--net=" + p.NetnsPath, "--", name}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		cmd.Err = errClosed
		return cmd
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:     true,
		UseCgroupFD: true,
		CgroupFD:    int(p.cgFD.Fd()),
	}
	b.cmds = append(b.cmds, cmd)
	return cmd
}

// Run runs a command in the pod and returns its combined output; the error
// includes the output.
func (p *Pod) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := p.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("pod %s: %s: %w: %s", p.Name,
			strings.Join(append([]string{name}, args...), " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Start starts a command in the pod in the background. The caller should
// Wait for it; Close kills it if it is still running.
func (p *Pod) Start(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	cmd := p.Command(ctx, name, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pod %s: start %s: %w", p.Name, name, err)
	}
	return cmd, nil
}
