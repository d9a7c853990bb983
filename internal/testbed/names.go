package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
)

// DefaultPrefix starts the name of every namespace and cgroup New creates.
const DefaultPrefix = "hmst"

// VIPRange is the mesh VIP range the bed blackholes so that a connection the
// datapath failed to redirect can never leave the machine.
var VIPRange = netip.MustParsePrefix("240.240.0.0/16")

// PodRange holds every pod subnet; pods route it (and only it) via their node.
var PodRange = netip.MustParsePrefix("10.250.0.0/16")

const (
	maxNodes    = 254 // node indexes 1..254; 255 is the fabric subnet
	maxPods     = 253 // pod addresses .2..254
	fabricIndex = 255
	// routeProto marks the root-netns blackhole routes a bed adds, so a sweep
	// recognises its own routes (their metric is the creating pid).
	routeProto = 235
)

// RequirePrivileged skips t unless HMS_TEST_PRIVILEGED=1 and the test runs as
// root: privileged tests share the kernel and must be asked for.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if os.Getenv("HMS_TEST_PRIVILEGED") != "1" || os.Geteuid() != 0 {
		t.Skip("privileged test: set HMS_TEST_PRIVILEGED=1 and run as root")
	}
}

// validPrefix keeps prefixes short and shell- and path-safe, since they start
// netns names and cgroup directories.
func validPrefix(p string) error {
	if p == "" || len(p) > 8 {
		return fmt.Errorf("prefix %q: want 1 to 8 characters", p)
	}
	for _, r := range p {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return fmt.Errorf("prefix %q: want only [a-z0-9]", p)
		}
	}
	return nil
}

// validName checks node and pod names, which become cgroup directory names.
func validName(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("name %q: want 1 to 64 characters", s)
	}
	if strings.HasPrefix(s, "cgroup.") || s == "." || s == ".." {
		return fmt.Errorf("name %q: reserved", s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("name %q: want only [A-Za-z0-9._-]", s)
		}
	}
	return nil
}

// bedID names a bed: "<prefix>-<pid>-<n>".
func bedID(prefix string, pid, n int) string {
	return fmt.Sprintf("%s-%d-%d", prefix, pid, n)
}

// ownerPID returns the creating pid encoded in a netns or cgroup name made
// with prefix, or ok=false if the name is not one of ours.
func ownerPID(prefix, name string) (pid int, ok bool) {
	rest, found := strings.CutPrefix(name, prefix+"-")
	if !found {
		return 0, false
	}
	pidStr, tail, found := strings.Cut(rest, "-")
	if !found || tail == "" {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// b36 formats v in base 36, zero-padded or truncated to width digits.
func b36(v, width int) string {
	s := strconv.FormatInt(int64(v), 36)
	if len(s) > width {
		s = s[len(s)-width:]
	}
	return strings.Repeat("0", width-len(s)) + s
}

// ifTag is the bed's part of interface names: "h" + pid (5 base-36 digits,
// enough for pid_max 2^22) + bed number (2 digits). It keeps names unique
// machine-wide while leaving room under IFNAMSIZ.
func ifTag(pid, n int) string {
	return "h" + b36(pid, 5) + b36(n, 2)
}

// ifName builds a 13-character interface name from the bed tag, a role letter
// and two indexes.
func ifName(tag string, role byte, a, b int) string {
	return tag + string(role) + b36(a, 2) + b36(b, 2)
}

// nodeSubnet is 10.250.<idx>.0/24.
func nodeSubnet(idx int) (netip.Prefix, error) {
	if idx < 1 || idx > maxNodes {
		return netip.Prefix{}, fmt.Errorf("node index %d out of range 1..%d", idx, maxNodes)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, byte(idx), 0}), 24), nil
}

// hostAddr is address .host inside subnet (a /24).
func hostAddr(subnet netip.Prefix, host int) netip.Addr {
	a := subnet.Addr().As4()
	a[3] = byte(host)
	return netip.AddrFrom4(a)
}

// podAddr is the address of the k-th pod (k = 1, 2, ...) of a node: .k+1.
func podAddr(subnet netip.Prefix, k int) (netip.Addr, error) {
	if k < 1 || k > maxPods {
		return netip.Addr{}, fmt.Errorf("pod index %d out of range 1..%d", k, maxPods)
	}
	return hostAddr(subnet, k+1), nil
}

// fabricAddr is a node's address on the fabric: 10.250.255.<idx>.
func fabricAddr(idx int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 250, fabricIndex, byte(idx)})
}

// netip24 formats a as a /24 interface address.
func netip24(a netip.Addr) string { return a.String() + "/24" }

// errClosed is returned by every operation on a closed bed.
var errClosed = errors.New("testbed: bed is closed")
