package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// requirePrivileged skips unless the privileged tier was asked for and the
// test runs as root (netns creation, setns and SO_MARK need it).
func requirePrivileged(tb testing.TB) {
	tb.Helper()
	if os.Getenv("HMS_TEST_PRIVILEGED") != "1" {
		tb.Skip("privileged test: set HMS_TEST_PRIVILEGED=1 and run as root (creates network namespaces)")
	}
	if os.Geteuid() != 0 {
		tb.Skip("privileged test: needs euid 0 (creates network namespaces, uses setns and SO_MARK)")
	}
}

var netnsSeq atomic.Int32

// newNetns creates a throwaway netns with lo up and returns its path; it is
// deleted when the test ends, pass or fail.
func newNetns(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("hmsnt-%d-%d", os.Getpid(), netnsSeq.Add(1))
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
		return nil
	}
	if err := ip("netns", "add", name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ip("netns", "del", name); err != nil {
			tb.Error(err)
		}
	})
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		tb.Fatal(err)
	}
	return filepath.Join("/var/run/netns", name)
}
