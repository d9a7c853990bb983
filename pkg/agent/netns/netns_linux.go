package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostNetns is an fd of the netns the process started in, opened while
// package init runs on the main thread (the runtime locks the main goroutine
// to the main thread during init), so it names the agent's own netns even if
// some thread is in a pod namespace later. It stays open for the life of the
// process; hostNetnsErr says why it is missing.
var hostNetns, hostNetnsErr = openHostNetns()

func openHostNetns() (int, error) {
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Open("/proc/self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("open host netns: %w", err)
	}
	return fd, nil
}

// openNetns opens the netns file at nsPath (a bind mount such as
// /var/run/netns/NAME or /proc/PID/ns/net).
func openNetns(nsPath string) (int, error) {
	if hostNetnsErr != nil {
		return -1, hostNetnsErr
	}
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	return fd, nil
}

// Do runs fn on a locked OS thread switched into the netns at nsPath, then
// switches back. Sockets fn creates belong to that netns. fn runs on a
// goroutine of its own, so it must not rely on goroutine-local state of the
// caller, and must not start goroutines that create sockets (they run on
// other threads, in the host netns). If switching back fails the thread is
// left locked and its goroutine ends, so the runtime discards the thread
// rather than let a goroutine run in the wrong netns. A panic in fn is
// re-raised in the caller after the switch back.
func Do(nsPath string, fn func() error) error {
	fd, err := openNetns(nsPath)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return run(fd, hostNetns, fn)
}

// result carries the outcome of fn from the goroutine of run to its caller.
type result struct {
	err      error
	panicked bool
	panicVal any
}

// run does the work of Do with open netns fds: target to enter, restore to
// return to.
func run(target, restore int, fn func() error) error {
	done := make(chan result, 1)
	go runLocked(target, restore, fn, done)
	r := <-done
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

// runLocked is the goroutine of run. It unlocks its thread only once the
// thread is back in restore; otherwise it exits locked, which makes the
// runtime terminate the thread.
func runLocked(target, restore int, fn func() error, done chan<- result) {
	runtime.LockOSThread()
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		// setns failed, so the thread did not move; it is safe to reuse.
		runtime.UnlockOSThread()
		done <- result{err: fmt.Errorf("enter netns: %w", err)}
		return
	}
	var r result
	func() {
		defer func() {
			if v := recover(); v != nil {
				r = result{panicked: true, panicVal: v}
			}
		}()
		r.err = fn()
	}()
	if err := unix.Setns(restore, unix.CLONE_NEWNET); err != nil {
		if !r.panicked {
			r.err = errors.Join(r.err, fmt.Errorf("return to host netns (thread discarded): %w", err))
		}
		done <- r
		return // still locked: the thread dies with this goroutine
	}
	runtime.UnlockOSThread()
	done <- r
}

// Cookie returns the netns cookie of the netns at nsPath: SO_NETNS_COOKIE of
// a socket created inside it, the key the eBPF programs use for a workload.
// It is stable for the life of the netns and never reused.
func Cookie(nsPath string) (uint64, error) {
	var cookie uint64
	err := Do(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		cookie, err = fdNetnsCookie(fd)
		return err
	})
	return cookie, err
}

// fdNetnsCookie reads SO_NETNS_COOKIE, a 64-bit value x/sys has no typed
// getter for.
func fdNetnsCookie(fd int) (uint64, error) {
	var v uint64
	l := uint32(unsafe.Sizeof(v))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", errno)
	}
	return v, nil
}

// SocketCookie returns the netns cookie of the netns a socket was created
// in, so callers (and tests) can tell which pod a connection belongs to.
func SocketCookie(c syscall.Conn) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cookie uint64
	var cerr error
	if err := rc.Control(func(fd uintptr) { cookie, cerr = fdNetnsCookie(int(fd)) }); err != nil {
		return 0, err
	}
	return cookie, cerr
}

// listenConfig returns the ListenConfig every in-netns listener uses:
// multipath TCP off (a BPF sockmap refuses MPTCP sockets, and Go 1.24+
// listeners default to it), SO_REUSEADDR on (Go sets it on listeners; set it
// again so the contract does not rest on a default), and a wildcard IPv6
// address dual-stack.
func listenConfig(addr string) (*net.ListenConfig, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: want ip:port: %w", addr, err)
	}
	dualStack := ap.Addr() == netip.IPv6Unspecified()
	lc := &net.ListenConfig{
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				if serr == nil && dualStack {
					serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
				}
			})
			return errors.Join(err, serr)
		},
	}
	lc.SetMultipathTCP(false)
	return lc, nil
}

// Listen creates a TCP listener inside the netns at nsPath, on addr, an IP
// literal and port such as "127.0.0.1:15001", "[::1]:15001" or "[::]:15006"
// ("[::]" also accepts IPv4). The listener is plain TCP, never MPTCP.
func Listen(nsPath, addr string) (*net.TCPListener, error) {
	lc, err := listenConfig(addr)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	err = Do(nsPath, func() error {
		ln, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, nsPath, err)
	}
	return ln.(*net.TCPListener), nil
}

// ListenUDP creates a UDP socket bound to addr inside the netns at nsPath,
// as for the DNS listener at 127.0.0.1:15053 and [::1]:15053.
func ListenUDP(nsPath, addr string) (*net.UDPConn, error) {
	lc, err := listenConfig(addr)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn
	err = Do(nsPath, func() error {
		pc, err = lc.ListenPacket(context.Background(), "udp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen udp %s in %s: %w", addr, nsPath, err)
	}
	return pc.(*net.UDPConn), nil
}
