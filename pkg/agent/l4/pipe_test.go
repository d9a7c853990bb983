package l4

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t *testing.T) (dialed, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := ln.AcceptTCP(); ch <- res{c, err} }()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { d.Close(); r.c.Close() })
	return d, r.c
}

// relay builds client <-> [a Pipe b] <-> server over real sockets and runs
// Pipe(wrap(a), wrap(b)) in the background.
func relay(t *testing.T, wrap func(*net.TCPConn) net.Conn) (client, server *net.TCPConn, done <-chan pipeResult) {
	t.Helper()
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	ch := make(chan pipeResult, 1)
	go func() {
		var r pipeResult
		r.aToB, r.bToA, r.err = Pipe(wrap(a), wrap(b))
		ch <- r
	}()
	return client, server, ch
}

type pipeResult struct {
	aToB, bToA int64
	err        error
}

func plain(c *net.TCPConn) net.Conn { return c }

func wait(t *testing.T, done <-chan pipeResult) pipeResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Pipe did not return")
		return pipeResult{}
	}
}

// sendAndSum writes data then half-closes; readSum hashes all it reads.
func sendAndSum(c *net.TCPConn, data []byte, errs chan<- error) {
	_, err := c.Write(data)
	if err == nil {
		err = c.CloseWrite()
	}
	errs <- err
}

func readSum(c *net.TCPConn, sum chan<- [32]byte, errs chan<- error) {
	h := sha256.New()
	_, err := io.Copy(h, c)
	errs <- err
	sum <- [32]byte(h.Sum(nil))
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// exchange sends up and down at the same time and checks both arrive intact.
func exchange(t *testing.T, client, server *net.TCPConn, up, down []byte) {
	t.Helper()
	errs := make(chan error, 4)
	atServer, atClient := make(chan [32]byte, 1), make(chan [32]byte, 1)
	go sendAndSum(client, up, errs)
	go sendAndSum(server, down, errs)
	go readSum(server, atServer, errs)
	go readSum(client, atClient, errs)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if <-atServer != sha256.Sum256(up) {
		t.Error("client->server bytes differ")
	}
	if <-atClient != sha256.Sum256(down) {
		t.Error("server->client bytes differ")
	}
}

func TestPipeRelaysBothWaysByteExact(t *testing.T) {
	up, down := randBytes(t, 5<<20+17), randBytes(t, 3<<20+5)
	client, server, done := relay(t, plain)
	exchange(t, client, server, up, down)
	r := wait(t, done)
	if r.err != nil || r.aToB != int64(len(up)) || r.bToA != int64(len(down)) {
		t.Fatalf("Pipe = %d, %d, %v; want %d, %d, nil", r.aToB, r.bToA, r.err, len(up), len(down))
	}
}

// TestPipeHalfClose: the client half-closes, the server reads to EOF and only
// then replies, and the reply still reaches the client.
func TestPipeHalfClose(t *testing.T) {
	client, server, done := relay(t, plain)
	client.Write([]byte("ping"))
	client.CloseWrite()
	req, err := io.ReadAll(server) // returns only at EOF
	if err != nil || string(req) != "ping" {
		t.Fatalf("server read %q, %v", req, err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	resp, err := io.ReadAll(client)
	if err != nil || string(resp) != "pong" {
		t.Fatalf("client read %q, %v", resp, err)
	}
	r := wait(t, done)
	if r.err != nil || r.aToB != 4 || r.bToA != 4 {
		t.Fatalf("Pipe = %d, %d, %v; want 4, 4, nil", r.aToB, r.bToA, r.err)
	}
}

// TestPipeClosesBothOnReset: the server resets mid-stream while the client
// is idle; Pipe must not hang, must report it, and must close the client.
func TestPipeClosesBothOnReset(t *testing.T) {
	client, server, done := relay(t, plain)
	client.Write([]byte("x"))
	if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	server.SetLinger(0)
	server.Close()
	r := wait(t, done)
	if r.err == nil {
		t.Error("Pipe hid the reset")
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read after reset: %v, want EOF or reset", err)
	}
}

// spyConn is a TCP conn that keeps the stdlib fast paths visible: if any
// copy reached ReadFrom or WriteTo (how io.Copy gets to splice/sendfile),
// it is counted.
type spyConn struct {
	*net.TCPConn
	fast *atomic.Int32
}

func (s spyConn) ReadFrom(r io.Reader) (int64, error) {
	s.fast.Add(1)
	return s.TCPConn.ReadFrom(r)
}

func (s spyConn) WriteTo(w io.Writer) (int64, error) {
	s.fast.Add(1)
	return s.TCPConn.WriteTo(w)
}

// TestPipeNoSpliceFastPath fails if Pipe lets a copy use ReadFrom/WriteTo of
// its connections, e.g. io.Copy(b, a) on the raw conns, or io.Copy with only
// one side wrapped, which is the splice(2) path for *net.TCPConn.
func TestPipeNoSpliceFastPath(t *testing.T) {
	var fast atomic.Int32
	client, server, done := relay(t, func(c *net.TCPConn) net.Conn { return spyConn{c, &fast} })
	exchange(t, client, server, randBytes(t, 1<<20), randBytes(t, 1<<20))
	if r := wait(t, done); r.err != nil {
		t.Fatal(r.err)
	}
	if n := fast.Load(); n != 0 {
		t.Fatalf("Pipe used ReadFrom/WriteTo %d times: the splice(2) path", n)
	}
	c, _ := tcpPair(t)
	if _, ok := any(writerOnly{c}).(io.ReaderFrom); ok {
		t.Error("writerOnly exposes ReadFrom")
	}
	if _, ok := any(readerOnly{c}).(io.WriterTo); ok {
		t.Error("readerOnly exposes WriteTo")
	}
}

// noHalfClose is a conn that cannot CloseWrite.
type noHalfClose struct{ net.Conn }

// TestPipeWithoutHalfClose: when a side cannot half-close, Pipe closes
// instead of leaving the peer waiting for an EOF that never comes.
func TestPipeWithoutHalfClose(t *testing.T) {
	client, server, done := relay(t, func(c *net.TCPConn) net.Conn { return noHalfClose{c} })
	client.Write([]byte("bye"))
	client.CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, []byte("bye")) {
		t.Fatalf("server read %q, %v", got, err)
	}
	if r := wait(t, done); r.err != nil || r.aToB != 3 {
		t.Fatalf("Pipe = %d, %d, %v", r.aToB, r.bToA, r.err)
	}
}

// TestPipeCountsWhileOpen: PipeCounts shows each direction's bytes while
// the connection is still open (what a periodic metrics flush reads), and
// the same totals Pipe returns once it ends.
func TestPipeCountsWhileOpen(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	var n Counts
	done := make(chan error, 1)
	go func() { done <- PipeCounts(a, b, &n) }()
	client.Write(make([]byte, 1000))
	if _, err := io.ReadFull(server, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	server.Write(make([]byte, 300))
	if _, err := io.ReadFull(client, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	// A count is added when its write returns, which may be just after
	// the peer read the bytes: wait for it, boundedly.
	want := [2]int64{1000, 300}
	got := [2]int64{n.AToB.Load(), n.BToA.Load()}
	for deadline := time.Now().Add(5 * time.Second); got != want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		got = [2]int64{n.AToB.Load(), n.BToA.Load()}
	}
	if got != want {
		t.Fatalf("counts while open = %v, want %v", got, want)
	}
	client.Write(make([]byte, 24))
	client.CloseWrite()
	if _, err := io.ReadAll(server); err != nil {
		t.Fatal(err)
	}
	server.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PipeCounts did not return")
	}
	if got, want := [2]int64{n.AToB.Load(), n.BToA.Load()}, [2]int64{1024, 300}; got != want {
		t.Fatalf("final counts = %v, want %v", got, want)
	}
}

// sizedReader fills each Read with fill(i) bytes (capped by the buffer) and
// records the buffer size each Read was given.
type sizedReader struct {
	fill  []int
	sizes []int
}

func (r *sizedReader) Read(p []byte) (int, error) {
	i := len(r.sizes)
	r.sizes = append(r.sizes, len(p))
	if i == len(r.fill) {
		return 0, io.EOF
	}
	return min(r.fill[i], len(p)), nil
}

// A direction reads through the small buffer, moves to the big one after a
// read fills the small one (bulk), and back after a read that would have
// fitted the small one.
func TestCopyLoopBufferFollowsTheStream(t *testing.T) {
	r := &sizedReader{fill: []int{100, smallBufSize, bigBufSize, bigBufSize, 5000, 100}}
	buf := newCopyBuf()
	defer buf.release()
	var n atomic.Int64
	if err := copyLoop(io.Discard, r, buf, &n, nil); err != nil {
		t.Fatal(err)
	}
	want := []int{smallBufSize, smallBufSize, bigBufSize, bigBufSize, bigBufSize, smallBufSize, smallBufSize}
	if len(r.sizes) != len(want) {
		t.Fatalf("reads saw buffers %v, want %v", r.sizes, want)
	}
	for i := range want {
		if r.sizes[i] != want[i] {
			t.Fatalf("reads saw buffers %v, want %v", r.sizes, want)
		}
	}
	if got, want := n.Load(), int64(100+smallBufSize+2*bigBufSize+5000+100); got != want {
		t.Fatalf("copied %d bytes, want %d", got, want)
	}
}
