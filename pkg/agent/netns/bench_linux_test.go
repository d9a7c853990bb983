package netns

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// acceptAndClose serves ln until it closes.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// closeNow closes with RST so b.N dials leave no TIME_WAIT behind.
func closeNow(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// BenchmarkPrivilegedDialNetns is one Dialer dial (thread lock, two setns,
// socket, SO_MARK, loopback connect) into a pod netns, plus close.
func BenchmarkPrivilegedDialNetns(b *testing.B) {
	requirePrivileged(b)
	ns := newNetns(b)
	ln, err := Listen(ns, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	d := &Dialer{NetnsPath: ns, Mark: testMark}
	defer d.Close()
	ctx := context.Background()
	for b.Loop() {
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		closeNow(c)
	}
}

// BenchmarkPrivilegedDialHost is the baseline: the same dial with a plain
// net.Dialer in the host netns, to isolate the cost of the netns switch.
func BenchmarkPrivilegedDialHost(b *testing.B) {
	requirePrivileged(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	d := &Dialer{Mark: testMark}
	ctx := context.Background()
	for b.Loop() {
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		closeNow(c)
	}
}

// BenchmarkPrivilegedSwitch is the bare round trip into a netns and back
// with a cached fd: goroutine, thread lock, two setns.
func BenchmarkPrivilegedSwitch(b *testing.B) {
	requirePrivileged(b)
	ns := newNetns(b)
	fd, err := openNetns(ns)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	for b.Loop() {
		if err := run(fd, hostNetns, func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
