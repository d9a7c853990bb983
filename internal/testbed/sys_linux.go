package testbed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hms-node/hms-node/internal/cgroupv2"
)

// ip runs iproute2 and folds its output into the error.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipIn runs iproute2 inside the named netns.
func ipIn(ns string, args ...string) error {
	return ip(append([]string{"-n", ns}, args...)...)
}

// ipAll runs each command inside ns, stopping at the first failure.
func ipAll(ns string, cmds ...[]string) error {
	for _, c := range cmds {
		if err := ipIn(ns, c...); err != nil {
			return err
		}
	}
	return nil
}

// waitUp waits until dev in ns is operationally up. Carrier changes reach
// operstate (and a bridge port's forwarding state) through the kernel's
// linkwatch, which defers non-urgent events by up to a second; until then a
// bridge port drops frames and the first SYN of a test is lost. A veth event
// is urgent only when its ifindex differs from its peer's, hence the fixed,
// distinct indexes; this wait is the backstop.
func waitUp(ns, dev string) error {
	deadline := time.Now().Add(3 * time.Second)
	for {
		out, err := exec.Command("ip", "-n", ns, "-j", "link", "show", "dev", dev).Output()
		if err != nil {
			return fmt.Errorf("link %s in %s: %w", dev, ns, err)
		}
		var links []struct {
			Operstate string `json:"operstate"`
		}
		if err := json.Unmarshal(out, &links); err != nil {
			return fmt.Errorf("link %s in %s: %w", dev, ns, err)
		}
		if len(links) == 1 && links[0].Operstate == "UP" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s in %s: not up after 3s: %s", dev, ns, bytes.TrimSpace(out))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sysctlIn sets a per-netns sysctl inside the netns at path. nsenter only
// switches the network namespace, so /proc/sys/net is that netns's.
func sysctlIn(path, kv string) error {
	out, err := exec.Command("nsenter", "--net="+path, "--", "sysctl", "-qw", kv).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysctl %s in %s: %w: %s", kv, path, err, bytes.TrimSpace(out))
	}
	return nil
}

// pidAlive reports whether a process with this pid exists.
func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killCgroup kills every process in dir and below: cgroup.kill when the
// kernel has it (5.14+), else SIGKILL to each pid in cgroup.procs.
func killCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	if err == nil || errors.Is(err, fs.ErrNotExist) && !dirExists(dir) {
		return nil
	}
	data, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if rerr != nil {
		if errors.Is(rerr, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("kill cgroup %s: %w", dir, rerr)
	}
	for _, f := range strings.Fields(string(data)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	return nil
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// removeCgroupTree kills everything in dir and removes it bottom-up. Killed
// tasks leave their cgroup asynchronously, so rmdir retries on EBUSY.
func removeCgroupTree(dir string) error {
	if err := killCgroup(dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, removeCgroupTree(filepath.Join(dir, e.Name())))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			break
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("rmdir cgroup %s: %w", dir, err))
			break
		}
		_ = killCgroup(dir)
		time.Sleep(10 * time.Millisecond)
	}
	return errors.Join(errs...)
}

// Sweep removes what crashed earlier runs left behind: cgroup trees, netns
// and root-netns VIP blackhole routes whose names (or route metric) carry the
// pid of a process that no longer exists. New and Open call it.
func Sweep(prefix string) error {
	var errs []error
	if mnt, err := cgroupv2.Mount(); err == nil {
		entries, _ := os.ReadDir(mnt)
		for _, e := range entries {
			if pid, ok := ownerPID(prefix, e.Name()); ok && e.IsDir() && !pidAlive(pid) {
				errs = append(errs, removeCgroupTree(filepath.Join(mnt, e.Name())))
			}
		}
	}
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if pid, ok := ownerPID(prefix, e.Name()); ok && !pidAlive(pid) {
			errs = append(errs, ip("netns", "del", e.Name()))
		}
	}
	routes, err := vipRoutes()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, r := range routes {
		if r.ours() && r.Metric > 0 && !pidAlive(r.Metric) {
			errs = append(errs, delRootRoute(r.Metric))
		}
	}
	return errors.Join(errs...)
}

// route is the part of `ip -j route` output the bed needs.
type route struct {
	Type     string `json:"type"`
	Protocol any    `json:"protocol"` // a name, or a number for unnamed protocols
	Metric   int    `json:"metric"`
}

func (r route) blackhole() bool { return r.Type == "blackhole" }
func (r route) ours() bool {
	return r.blackhole() && fmt.Sprint(r.Protocol) == strconv.Itoa(routeProto)
}

// vipRoutes lists the root netns's main-table routes for exactly VIPRange.
func vipRoutes() ([]route, error) {
	out, err := exec.Command("ip", "-j", "route", "show", "table", "main", "exact", VIPRange.String()).Output()
	if err != nil {
		return nil, fmt.Errorf("list routes for %s: %w", VIPRange, err)
	}
	var rs []route
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("list routes for %s: %w", VIPRange, err)
	}
	return rs, nil
}

func rootRouteArgs(verb string, metric int) []string {
	return []string{"route", verb, "blackhole", VIPRange.String(),
		"proto", strconv.Itoa(routeProto), "metric", strconv.Itoa(metric)}
}

func delRootRoute(metric int) error { return ip(rootRouteArgs("del", metric)...) }

// rootRoute is the process's share of the root-netns VIP blackhole: one
// route per process (metric = pid, so processes never remove each other's),
// referenced by every open bed of the process.
var rootRoute struct {
	mu    sync.Mutex
	refs  int
	added bool // this process added the route and must remove it
}

// acquireRootRoute blackholes VIPRange in the root netns unless an identical
// route is there already: another blackhole not made by a bed (an admin's),
// or this process's own.
func acquireRootRoute() error {
	rootRoute.mu.Lock()
	defer rootRoute.mu.Unlock()
	if rootRoute.refs > 0 {
		rootRoute.refs++
		return nil
	}
	rs, err := vipRoutes()
	if err != nil {
		return err
	}
	pid := os.Getpid()
	present := false
	for _, r := range rs {
		if r.blackhole() && (!r.ours() || r.Metric == pid) {
			present = true
		}
	}
	if !present {
		if err := ip(rootRouteArgs("add", pid)...); err != nil {
			return err
		}
	}
	rootRoute.added = !present
	rootRoute.refs = 1
	return nil
}

// releaseRootRoute drops a reference and removes the route with the last.
func releaseRootRoute() error {
	rootRoute.mu.Lock()
	defer rootRoute.mu.Unlock()
	rootRoute.refs--
	if rootRoute.refs > 0 || !rootRoute.added {
		return nil
	}
	rootRoute.added = false
	return delRootRoute(os.Getpid())
}

// rootRouteAdded reports whether this process currently owns a root route.
func rootRouteAdded() bool {
	rootRoute.mu.Lock()
	defer rootRoute.mu.Unlock()
	return rootRoute.added
}
