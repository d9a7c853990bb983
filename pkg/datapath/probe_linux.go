package datapath

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// MissingError names a kernel feature or privilege the datapath needs and
// what to do about it.
type MissingError struct {
	Feature string // e.g. "CAP_BPF", "sk_lookup programs"
	Fix     string // what the operator should do
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("missing %s: %s", e.Feature, e.Fix)
}

const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
)

// Probe checks the privileges and kernel features the datapath relies on,
// cheapest first, and returns a *MissingError (or several joined) for what
// is missing.
func Probe() error {
	if err := probeCaps(); err != nil {
		return err
	}
	var errs []error
	for _, pt := range []struct {
		t    ebpf.ProgramType
		name string
	}{
		{ebpf.CGroupSockAddr, "cgroup sock_addr programs (CONFIG_CGROUP_BPF)"},
		{ebpf.SockOps, "sockops programs (CONFIG_CGROUP_BPF)"},
		{ebpf.SkMsg, "sk_msg programs (CONFIG_BPF_STREAM_PARSER)"},
		{ebpf.SkLookup, "sk_lookup programs (kernel 5.9+)"},
		{ebpf.Syscall, "syscall programs, for the same-node L4 shortcut (kernel 5.14+)"},
	} {
		if err := features.HaveProgramType(pt.t); err != nil {
			errs = append(errs, &MissingError{pt.name, "run on a kernel built with it (5.15 or newer recommended): " + err.Error()})
		}
	}
	for _, mt := range []struct {
		t    ebpf.MapType
		name string
	}{
		{ebpf.SockHash, "sockhash maps (CONFIG_BPF_STREAM_PARSER)"},
		{ebpf.SkStorage, "socket storage maps (kernel 5.2+)"},
	} {
		if err := features.HaveMapType(mt.t); err != nil {
			errs = append(errs, &MissingError{mt.name, "run on a kernel built with it: " + err.Error()})
		}
	}
	if len(errs) == 0 {
		if err := features.HaveProgramHelper(ebpf.SkLookup, asm.FnSkAssign); err != nil {
			errs = append(errs, &MissingError{"bpf_sk_assign in sk_lookup", "use kernel 5.9 or newer: " + err.Error()})
		}
	}
	return errors.Join(errs...)
}

// probeCaps reads the effective capability set: without these, every later
// step fails with a bare EPERM.
func probeCaps() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: 0}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	var missing []error
	for _, c := range []struct {
		n    uint
		name string
		why  string
	}{
		{capBPF, "CAP_BPF", "load BPF programs and maps"},
		{capNetAdmin, "CAP_NET_ADMIN", "attach cgroup/sockops/sk_lookup programs"},
		{capSysAdmin, "CAP_SYS_ADMIN", "enter pod network namespaces and mount bpffs"},
	} {
		if !has(c.n) {
			missing = append(missing, &MissingError{
				Feature: "privilege " + c.name,
				Fix:     fmt.Sprintf("run the agent as root or grant %s (needed to %s)", c.name, c.why),
			})
		}
	}
	if len(missing) > 0 && os.Geteuid() != 0 {
		missing = append(missing, errors.New("the agent is not running as root"))
	}
	return errors.Join(missing...)
}
