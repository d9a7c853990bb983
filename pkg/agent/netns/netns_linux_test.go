package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const testMark = 0x4d5

// hostCookie is the netns cookie of a socket the test creates normally.
func hostCookie(t *testing.T) uint64 {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := fdNetnsCookie(fd)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sockoptInt(t *testing.T, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

func dial(t *testing.T, d *Dialer, network, addr string) net.Conn {
	t.Helper()
	c, err := d.DialContext(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPrivilegedCookie(t *testing.T) {
	requirePrivileged(t)
	ns1, ns2 := newNetns(t), newNetns(t)
	host := hostCookie(t)
	c1, err := Cookie(ns1)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Cookie(ns1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Cookie(ns2)
	if err != nil {
		t.Fatal(err)
	}
	if c1 == 0 || c1 == host || c2 == host || c1 == c2 {
		t.Fatalf("cookies not distinct: host %d ns1 %d ns2 %d", host, c1, c2)
	}
	if again != c1 {
		t.Fatalf("cookie not stable: %d then %d", c1, again)
	}
	if _, err := Cookie("/nonexistent/netns"); err == nil {
		t.Fatal("Cookie of a missing netns succeeded")
	}
}

// TestPrivilegedListenIsolated shows a listener made by Listen lives in the
// pod netns only, and a Dialer's connection is created there and marked.
func TestPrivilegedListenIsolated(t *testing.T) {
	requirePrivileged(t)
	ns := newNetns(t)
	nsCookie, err := Cookie(ns)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(ns, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if got := sockoptInt(t, ln, unix.SOL_SOCKET, unix.SO_REUSEADDR); got != 1 {
		t.Errorf("SO_REUSEADDR = %d, want 1", got)
	}
	if c, _ := SocketCookie(ln); c != nsCookie {
		t.Errorf("listener netns cookie %d, want pod %d", c, nsCookie)
	}

	d := &Dialer{NetnsPath: ns, Mark: testMark, Timeout: 2 * time.Second}
	defer d.Close()
	c := dial(t, d, "tcp", addr)
	ac, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if ac.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("accepted peer %s, dialled local %s: not the same connection", ac.RemoteAddr(), c.LocalAddr())
	}
	if got, _ := SocketCookie(c.(*net.TCPConn)); got != nsCookie {
		t.Errorf("dialled socket netns cookie %d, want pod %d (host %d)", got, nsCookie, hostCookie(t))
	}
	if got := sockoptInt(t, c.(*net.TCPConn), unix.SOL_SOCKET, unix.SO_MARK); got != testMark {
		t.Errorf("dialled SO_MARK = %#x, want %#x", got, testMark)
	}
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(ac, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}

	// The same address from the host netns must not reach the pod listener.
	hc, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		hc.Close()
		ln.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if x, err := ln.Accept(); err == nil {
			x.Close()
			t.Fatalf("host dial of %s reached the pod listener", addr)
		}
		t.Logf("host dial of %s hit an unrelated host listener", addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("host dial of %s: %v, want connection refused", addr, err)
	}
}

// TestPrivilegedListenNotMPTCP checks multipath is off, against a default
// ListenConfig in the same netns, which is MPTCP where the kernel has it.
func TestPrivilegedListenNotMPTCP(t *testing.T) {
	requirePrivileged(t)
	ns := newNetns(t)
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0", "[::]:0"} {
		ln, err := Listen(ns, addr)
		if err != nil {
			t.Fatal(err)
		}
		if p := sockoptInt(t, ln, unix.SOL_SOCKET, unix.SO_PROTOCOL); p != unix.IPPROTO_TCP {
			t.Errorf("Listen(%s): SO_PROTOCOL = %d, want IPPROTO_TCP", addr, p)
		}
		ln.Close()
	}
	var def net.Listener
	err := Do(ns, func() (err error) {
		def, err = (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer def.Close()
	p := sockoptInt(t, def.(*net.TCPListener), unix.SOL_SOCKET, unix.SO_PROTOCOL)
	t.Logf("default Go listener in the netns: SO_PROTOCOL = %d (MPTCP is %d)", p, unix.IPPROTO_MPTCP)
	if b, _ := os.ReadFile("/proc/sys/net/mptcp/enabled"); strings.TrimSpace(string(b)) == "1" && p != unix.IPPROTO_MPTCP {
		t.Errorf("control: default listener is not MPTCP on an MPTCP kernel, so this test proves nothing")
	}
}

func TestPrivilegedListenDualStack(t *testing.T) {
	requirePrivileged(t)
	ns := newNetns(t)
	ln, err := Listen(ns, "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if v := sockoptInt(t, ln, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); v != 0 {
		t.Fatalf("IPV6_V6ONLY = %d, want 0", v)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	d := &Dialer{NetnsPath: ns, Mark: testMark}
	defer d.Close()
	for _, host := range []string{"127.0.0.1", "::1"} {
		c := dial(t, d, "tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "ok" {
			t.Errorf("via %s: read %q, %v", host, b, err)
		}
	}
}

func TestPrivilegedListenUDP(t *testing.T) {
	requirePrivileged(t)
	ns := newNetns(t)
	nsCookie, err := Cookie(ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		pc, err := ListenUDP(ns, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if got, _ := SocketCookie(pc); got != nsCookie {
			t.Errorf("udp listener netns cookie %d, want %d", got, nsCookie)
		}
		d := &Dialer{NetnsPath: ns, Mark: testMark}
		defer d.Close()
		c := dial(t, d, "udp", pc.LocalAddr().String())
		if got := sockoptInt(t, c.(*net.UDPConn), unix.SOL_SOCKET, unix.SO_MARK); got != testMark {
			t.Errorf("udp SO_MARK = %#x, want %#x", got, testMark)
		}
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		pc.SetDeadline(time.Now().Add(2 * time.Second))
		n, from, err := pc.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "q" || from.String() != c.LocalAddr().String() {
			t.Fatalf("got %q from %v (%v), want q from %v", buf[:n], from, err, c.LocalAddr())
		}
		if _, err := pc.WriteToUDP([]byte("a"), from); err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "a" {
			t.Fatalf("reply %q, %v", buf[:n], err)
		}
	}
}

// TestPrivilegedThreadsReturnHome runs many Do calls and dials at once
// (errors and panics included), then checks that no thread of the process
// was left in the pod netns.
func TestPrivilegedThreadsReturnHome(t *testing.T) {
	requirePrivileged(t)
	ns := newNetns(t)
	host := hostCookie(t)
	ln, err := Listen(ns, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d := &Dialer{NetnsPath: ns, Mark: testMark}
	defer d.Close()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			switch i % 3 {
			case 0:
				if err := Do(ns, func() error { return boom }); !errors.Is(err, boom) {
					t.Errorf("Do error = %v, want boom", err)
				}
			case 1:
				defer func() {
					if r := recover(); r != "fn panic" {
						t.Errorf("Do panic re-raised as %v", r)
					}
				}()
				Do(ns, func() error { panic("fn panic") })
			case 2:
				c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	for range 256 {
		wg.Go(func() {
			if c := hostCookie(t); c != host {
				t.Errorf("a goroutine ran in netns cookie %d, want host %d", c, host)
			}
		})
	}
	wg.Wait()
}

// TestPrivilegedRestoreFailureDiscardsThread makes the switch back fail and
// checks the thread that stayed in the pod netns is terminated.
func TestPrivilegedRestoreFailureDiscardsThread(t *testing.T) {
	requirePrivileged(t)
	ns := newNetns(t)
	fd, err := openNetns(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// The Go runtime terminates a thread whose goroutine exits locked to
	// it, except the main thread, which it parks for good instead (it then
	// runs nothing again): a run that landed there proves nothing about
	// termination, so run again.
	var tid int
	for attempt := 0; attempt < 5 && (tid == 0 || tid == unix.Getpid()); attempt++ {
		err = run(fd, -1, func() error { tid = unix.Gettid(); return nil })
		if err == nil || !strings.Contains(err.Error(), "thread discarded") {
			t.Fatalf("run with a bad restore fd: %v, want thread discarded error", err)
		}
	}
	if tid == unix.Getpid() {
		t.Fatal("5 runs in a row landed on the main thread")
	}
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(task); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d left in the pod netns still exists", tid)
		}
	}
}

func TestDialerRejectsUnknownNetwork(t *testing.T) {
	d := &Dialer{}
	if _, err := d.DialContext(context.Background(), "unix", "/tmp/x"); err == nil {
		t.Fatal("unix dial accepted")
	}
}

func TestListenRejectsNonLiteral(t *testing.T) {
	if _, err := Listen("/nonexistent", "localhost:1"); err == nil || !strings.Contains(err.Error(), "want ip:port") {
		t.Fatalf("Listen(localhost:1) = %v, want an address error", err)
	}
}
