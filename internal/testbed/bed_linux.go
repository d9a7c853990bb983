package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/hms-node/hms-node/internal/cgroupv2"
)

// bedSeq numbers the beds of this process.
var bedSeq atomic.Int64

// New creates a bed named with DefaultPrefix and registers t.Cleanup(b.Close),
// so everything is removed even when the test fails. It sweeps leftovers of
// crashed earlier runs first. Call RequirePrivileged before it.
func New(t testing.TB) *Bed {
	t.Helper()
	b, err := Open(DefaultPrefix)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("testbed: close: %v", err)
		}
	})
	return b
}

// Open is New without testing, for demos and benchmarks: the caller must
// Close the bed. An empty prefix means DefaultPrefix.
func Open(prefix string) (*Bed, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	mnt, err := cgroupv2.Mount()
	if err != nil {
		return nil, err
	}
	if err := Sweep(prefix); err != nil {
		return nil, fmt.Errorf("sweep leftovers: %w", err)
	}
	pid, n := os.Getpid(), int(bedSeq.Add(1))
	b := &Bed{
		prefix: prefix,
		id:     bedID(prefix, pid, n),
		tag:    ifTag(pid, n),
	}
	b.cgRoot = filepath.Join(mnt, b.id)
	b.fabric = b.id + "-fab"
	b.fabBr = ifName(b.tag, 'f', 0, 0)
	b.mu.Lock()
	err = b.setupLocked()
	b.mu.Unlock()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open bed %s: %w", b.id, err), b.Close())
	}
	return b, nil
}

func (b *Bed) setupLocked() error {
	if err := os.Mkdir(b.cgRoot, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	b.cgMade = true
	if err := acquireRootRoute(); err != nil {
		return err
	}
	b.routeHeld = true
	if err := b.addNetnsLocked(b.fabric); err != nil {
		return err
	}
	return ipAll(b.fabric,
		[]string{"link", "add", b.fabBr, "index", "2", "type", "bridge"},
		[]string{"link", "set", b.fabBr, "up"})
}

// ID is the bed's name stem, <prefix>-<pid>-<n>; its cgroup dir and every
// netns it makes start with it.
func (b *Bed) ID() string { return b.id }

// CgroupDir is the bed's cgroup v2 directory, parent of every node's.
func (b *Bed) CgroupDir() string { return b.cgRoot }

// Nodes returns the nodes added so far, in order.
func (b *Bed) Nodes() []*Node {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*Node(nil), b.nodes...)
}

// addNetnsLocked creates a named netns with lo up and the VIP range
// blackholed, and records it for Close before anything else can fail.
func (b *Bed) addNetnsLocked(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	b.made = append(b.made, name)
	return ipAll(name,
		[]string{"link", "set", "lo", "up"},
		[]string{"route", "replace", "blackhole", VIPRange.String()})
}

// Close kills every process the bed started or that sits in its cgroups,
// deletes its netns (and with them all veths, bridges and routes inside),
// removes its cgroup dirs bottom-up and drops its root-netns route. It is
// idempotent: later calls return the first call's result.
func (b *Bed) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return b.closeErr
	}
	b.closed = true
	for _, c := range b.cmds {
		if c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		}
	}
	var errs []error
	for _, n := range b.nodes {
		for _, p := range n.pods {
			errs = append(errs, p.cgFD.Close())
		}
	}
	if b.cgMade {
		errs = append(errs, removeCgroupTree(b.cgRoot))
	}
	for i := len(b.made) - 1; i >= 0; i-- {
		errs = append(errs, ip("netns", "del", b.made[i]))
	}
	if b.routeHeld {
		errs = append(errs, releaseRootRoute())
	}
	b.closeErr = errors.Join(errs...)
	return b.closeErr
}

// AddNode adds a node: a netns with a bridge holding the node's gateway
// address, an uplink into the fabric, forwarding on, and routes to and from
// every existing node's pod subnet.
func (b *Bed) AddNode(name string) (*Node, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	for _, n := range b.nodes {
		if n.Name == name {
			return nil, fmt.Errorf("add node %s: name in use", name)
		}
	}
	b.nodeSeq++
	subnet, err := nodeSubnet(b.nodeSeq)
	if err != nil {
		return nil, err
	}
	n := &Node{
		Name:      name,
		CgroupDir: filepath.Join(b.cgRoot, name),
		Subnet:    subnet,
		Gateway:   hostAddr(subnet, 1),
		bed:       b,
		idx:       b.nodeSeq,
		nsName:    fmt.Sprintf("%s-n%d", b.id, b.nodeSeq),
		bridge:    ifName(b.tag, 'b', b.nodeSeq, 0),
	}
	n.Netns = filepath.Join(netnsDir, n.nsName)
	if err := b.buildNodeLocked(n); err != nil {
		return nil, fmt.Errorf("add node %s: %w", name, err)
	}
	b.nodes = append(b.nodes, n)
	return n, nil
}

// MustAddNode is AddNode that fails t on error.
func (b *Bed) MustAddNode(t testing.TB, name string) *Node {
	t.Helper()
	n, err := b.AddNode(name)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	return n
}

func (b *Bed) buildNodeLocked(n *Node) error {
	if err := os.Mkdir(n.CgroupDir, 0o755); err != nil {
		return fmt.Errorf("create cgroup: %w", err)
	}
	if err := b.addNetnsLocked(n.nsName); err != nil {
		return err
	}
	up, down := ifName(b.tag, 'u', n.idx, 0), ifName(b.tag, 'd', n.idx, 0)
	gw := netip24(n.Gateway)
	err := ipAll(n.nsName,
		[]string{"link", "add", n.bridge, "index", "2", "type", "bridge"},
		[]string{"addr", "add", gw, "dev", n.bridge},
		[]string{"link", "set", n.bridge, "up"},
		[]string{"link", "add", up, "index", "3", "type", "veth",
			"peer", "name", down, "index", strconv.Itoa(100 + n.idx), "netns", b.fabric},
		[]string{"addr", "add", netip24(fabricAddr(n.idx)), "dev", up},
		[]string{"link", "set", up, "up"})
	if err != nil {
		return err
	}
	if err := ipIn(b.fabric, "link", "set", down, "master", b.fabBr, "up"); err != nil {
		return err
	}
	if err := waitUp(b.fabric, down); err != nil {
		return err
	}
	if err := sysctlIn(n.Netns, "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	for _, m := range b.nodes {
		if err := ipIn(n.nsName, "route", "add", m.Subnet.String(), "via", fabricAddr(m.idx).String()); err != nil {
			return err
		}
		if err := ipIn(m.nsName, "route", "add", n.Subnet.String(), "via", fabricAddr(n.idx).String()); err != nil {
			return err
		}
	}
	return nil
}
