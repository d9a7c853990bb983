package handover

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns the two ends of a connected unix stream socket pair.
func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	a, b, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// offerAsync runs Offer on old in a goroutine and returns its result channel.
func offerAsync(old *net.UnixConn, state []byte, socks []Socket, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- Offer(old, state, socks, time.Now().Add(d)) }()
	return done
}

func nonBlocking(t *testing.T, c syscall.Conn) bool {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	return flags&unix.O_NONBLOCK != 0
}

// TestQueuedConnectionSurvives proves a connection queued on a TCP listener
// but not yet accepted is accepted by the new agent, intact, with the bytes
// the client already sent, and that the state blob arrives unchanged.
func TestQueuedConnectionSurvives(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}

	old, nu := pair(t)
	state := []byte(`{"workloads":["a","b"]}`)
	done := offerAsync(old, state, []Socket{{Name: "outbound", Conn: ln}}, 5*time.Second)
	rec, err := Take(nu, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if !bytes.Equal(rec.State, state) {
		t.Fatalf("state = %q, want %q", rec.State, state)
	}
	nl, err := rec.Listener("outbound")
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if err := Commit(nu); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Offer after commit: %v", err)
	}
	ln.Close() // the old agent stops accepting; the queue is not reset

	c, err := nl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != client.LocalAddr().String() {
		t.Fatalf("accepted %v, want the queued %v", c.RemoteAddr(), client.LocalAddr())
	}
	buf := make([]byte, 4)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf, err)
	}
	c.Write([]byte("pong"))
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v; want pong (connection reset?)", buf, err)
	}
}

// TestUDPAndUnixSurvive proves a UDP conn and the unix API listener make
// the trip, and that after commit the old agent's Close leaves the socket
// file to the new one.
func TestUDPAndUnixSurvive(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old, nu := pair(t)
	done := offerAsync(old, nil, []Socket{{Name: "dns", Conn: udp}, {Name: "api", Conn: ul}}, 5*time.Second)
	rec, err := Take(nu, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if _, err := rec.Listener("dns"); err == nil || !strings.Contains(err.Error(), "packet") {
		t.Fatalf("Listener on a UDP socket = %v, want a clear kind error", err)
	}
	pc, err := rec.PacketConn("dns")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	nul, err := rec.UnixListener("api")
	if err != nil {
		t.Fatal(err)
	}
	defer nul.Close()
	if err := Commit(nu); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	udp.Close()
	ul.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("old agent's Close removed the socket it handed over: %v", err)
	}

	sender, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	sender.Write([]byte("query"))
	buf := make([]byte, 16)
	pc.SetDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "query" {
		t.Fatalf("UDP read %q, %v", buf[:n], err)
	}

	cli, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	nul.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := nul.Accept()
	if err != nil {
		t.Fatalf("new agent's unix listener: %v", err)
	}
	c.Close()
}

// TestNoCommitOldKeepsServing proves that without a commit Offer fails at
// the deadline, and the old agent's listener is untouched: still
// non-blocking (even after the taker built a listener from its copy),
// Accept still works, and Close returns promptly and wakes a blocked Accept.
func TestNoCommitOldKeepsServing(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	old, nu := pair(t)
	start := time.Now()
	done := offerAsync(old, []byte("s"), []Socket{{Name: "l", Conn: ln}}, 300*time.Millisecond)
	rec, err := Take(nu, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nl, err := rec.Listener("l") // goes through (*os.File).Fd inside net
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Offer without commit = %v, want a deadline error", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("Offer returned after %v, want about 300ms", d)
	}
	if !nonBlocking(t, ln) {
		t.Fatal("old listener switched to blocking mode")
	}

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nl.Close() // the aborted taker lets go
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	a, err := ln.Accept()
	if err != nil {
		t.Fatalf("old agent cannot accept after a failed handover: %v", err)
	}
	a.Close()

	ln.SetDeadline(time.Time{})
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Accept block
	closed := make(chan struct{})
	go func() { ln.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close on the old listener hangs")
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake a blocked Accept")
	}
}

// TestSuccessorHangsUp proves a taker that disconnects without committing
// makes Offer fail at once, not at the deadline.
func TestSuccessorHangsUp(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	old, nu := pair(t)
	done := offerAsync(old, nil, []Socket{{Name: "l", Conn: ln}}, time.Minute)
	rec, err := Take(nu, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	rec.Close()
	nu.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "without committing") {
			t.Fatalf("Offer = %v, want a hang-up error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Offer did not notice the hang-up")
	}
}

// TestRefusesIncompatibleVersion proves a taker refuses a predecessor that
// speaks another version, with ErrVersion and both versions in the message.
func TestRefusesIncompatibleVersion(t *testing.T) {
	old, nu := pair(t)
	go func() {
		var a askMsg
		if readFrame(old, &a) == nil {
			writeFrame(old, header{Proto: proto, Version: 99})
		}
	}()
	_, err := Take(nu, time.Now().Add(5*time.Second))
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("Take = %v, want ErrVersion", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "version 99") || !strings.Contains(msg, "version 1") {
		t.Fatalf("error %q does not name both versions", msg)
	}
}

// TestManySocketsBatched proves more sockets than fit in one SCM_RIGHTS
// message (450, three batches) all arrive under the right names.
func TestManySocketsBatched(t *testing.T) {
	const n = 450
	var socks []Socket
	for i := 0; i < n; i++ {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, Socket{Name: c.LocalAddr().String(), Conn: c})
	}
	old, nu := pair(t)
	done := offerAsync(old, nil, socks, 10*time.Second)
	rec, err := Take(nu, time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	for _, s := range socks {
		pc, err := rec.PacketConn(s.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := pc.LocalAddr().String(); got != s.Name {
			t.Fatalf("socket %q arrived as %s", s.Name, got)
		}
		pc.Close()
	}
	Commit(nu)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// socketPair is pair without a testing.T, for goroutines.
func socketPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var cs [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		cs[i] = c.(*net.UnixConn)
	}
	return cs[0], cs[1], nil
}

// TestOfferLeavesSocketsNonBlocking receives Offer's fds with a bare
// recvmsg (no Take, which would re-assert O_NONBLOCK) and proves Offer
// itself never switched the shared socket to blocking mode, as
// (*os.File).Fd would.
func TestOfferLeavesSocketsNonBlocking(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	old, nu := pair(t)
	done := offerAsync(old, nil, []Socket{{Name: "l", Conn: ln}}, 5*time.Second)
	if err := writeFrame(nu, askMsg{Proto: proto, Version: Version}); err != nil {
		t.Fatal(err)
	}
	r := &fdReader{conn: nu, oob: make([]byte, unix.CmsgSpace(253*4))}
	defer r.closeAll()
	var h header
	if err := readFrame(r, &h); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil || len(r.fds) != 1 {
		t.Fatalf("got %d fds, %v", len(r.fds), err)
	}
	if !nonBlocking(t, ln) {
		t.Fatal("Offer switched the listener to blocking mode")
	}
	nu.Close()
	if err := <-done; err == nil {
		t.Fatal("Offer succeeded without a commit")
	}
}
