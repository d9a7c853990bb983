package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// appListener makes the server's Handle dial a listener the test serves
// itself, and returns the application's end of each tunnel.
func appListener(t *testing.T) (mod func(*testEnv), accepted <-chan *net.TCPConn) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan *net.TCPConn, 16)
	go func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			ch <- c
		}
	}()
	mod = func(e *testEnv) {
		e.srv.Handle = func(ctx context.Context, r *Request) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}
	}
	return mod, ch
}

// The application may end its side first (a server that says goodbye and
// then reads what is left): the client reads EOF and can still send.
func TestAppHalfCloseFirstClientKeepsSending(t *testing.T) {
	mod, accepted := appListener(t)
	e := newTestEnv(t, mod)
	c := e.connect(t)
	defer c.Close()
	app := <-accepted
	app.Write([]byte("bye"))
	app.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye" {
		t.Fatalf("client read %q, %v; want bye then EOF", got, err)
	}
	if _, err := c.Write([]byte("still here")); err != nil {
		t.Fatalf("client write after the app's half-close: %v", err)
	}
	c.(closeWriter).CloseWrite()
	app.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(app)
	if err != nil || string(rest) != "still here" {
		t.Fatalf("app read %q, %v; want the client's bytes after its own half-close", rest, err)
	}
}

// A tunnel whose reader stalls fills its own stream window only: another
// tunnel on the same connection goes on.
func TestStalledTunnelDoesNotBlockOthers(t *testing.T) {
	mod, accepted := appListener(t)
	e := newTestEnv(t, mod)
	stalled := e.connect(t)
	defer stalled.Close()
	app := <-accepted
	go app.Write(make([]byte, 3*streamWindow)) // the client never reads it

	time.Sleep(200 * time.Millisecond) // let the stalled stream's window fill
	other := e.connect(t)
	defer other.Close()
	app2 := <-accepted
	go func() { copyBuf(app2, app2) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		roundTrip(t, other, []byte("through"))
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("second tunnel stalled behind the first")
	}
	if s := e.pool.Stats(); s.Connections != 1 {
		t.Fatalf("stats %+v: want both tunnels on one connection", s)
	}
}

// More than the connection's window in one direction: the connection-level
// window must be given back as the reader consumes.
func TestBulkBeyondConnectionWindow(t *testing.T) {
	mod, accepted := appListener(t)
	e := newTestEnv(t, mod)
	c := e.connect(t)
	defer c.Close()
	app := <-accepted
	data := make([]byte, connWindow+5<<20+7)
	rand.Read(data)
	go func() {
		app.Write(data)
		app.CloseWrite()
	}()
	var got bytes.Buffer
	if err := copyBuf(&got, c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("received %d bytes, not the %d sent", got.Len(), len(data))
	}
}

// A pooled connection with no tunnel closes after the pool's IdleTimeout.
func TestIdleConnectionCloses(t *testing.T) {
	e := newTestEnv(t, func(e *testEnv) { e.pool.IdleTimeout = 300 * time.Millisecond })
	c := e.connect(t)
	roundTrip(t, c, []byte("x"))
	time.Sleep(600 * time.Millisecond)
	if s := e.pool.Stats(); s.Connections != 1 {
		t.Fatalf("stats %+v: a connection with an open tunnel must stay", s)
	}
	c.Close()
	deadline := time.Now().Add(3 * time.Second)
	for e.pool.Stats().Connections != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: idle connection still open", e.pool.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c2 := e.connect(t) // and the pool dials a fresh one
	defer c2.Close()
	roundTrip(t, c2, []byte("y"))
	if s := e.pool.Stats(); s.Handshakes != 2 {
		t.Fatalf("stats %+v: want a second handshake after the idle close", s)
	}
}

// A read deadline interrupts a Read waiting for data without harming the
// stream, as on TCP: net/http's server interrupts its background read so.
// A write deadline interrupts a Write waiting for window.
func TestStreamDeadlines(t *testing.T) {
	mod, accepted := appListener(t)
	e := newTestEnv(t, mod)
	c := e.connect(t)
	defer c.Close()
	app := <-accepted

	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Now().Add(-time.Second)) // in the past: fails at once
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a past deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	app.Write([]byte("late"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
		t.Fatalf("read after clearing the deadline: %q, %v", buf, err)
	}

	// The app never reads: the windows fill and Write waits, until its
	// deadline. The TCP buffers between app and server take some first.
	c.SetWriteDeadline(time.Now().Add(time.Second))
	n, err := c.Write(make([]byte, 64*streamWindow))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write into a closed window: %d bytes, %v; want os.ErrDeadlineExceeded", n, err)
	}
	// The stream is not reset: once the app reads, writing goes on.
	c.SetWriteDeadline(time.Time{})
	go io.Copy(io.Discard, app)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write after the deadline was cleared: %v", err)
	}
}

// A peer that stops reading (but keeps the connection up) fails the
// connection within the write timeout: writes must not hold the
// connection's write lock, and every stream with it, for good.
func TestPeerThatStopsReadingFailsTheConnection(t *testing.T) {
	old := writeTimeout
	writeTimeout = 300 * time.Millisecond
	defer func() { writeTimeout = old }()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	m := newMux(a, true)
	go func() {
		// The peer takes the client's preface, settings and window
		// update, sends its own settings, then reads nothing more.
		buf := make([]byte, len(http2.ClientPreface))
		io.ReadFull(b, buf)
		fr := http2.NewFramer(b, b)
		fr.ReadFrame()
		fr.ReadFrame()
		fr.WriteSettings()
	}()
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := m.open(nil, "10.0.0.1:80", http.Header{})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a CONNECT to a peer that reads nothing succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writes to a peer that stopped reading blocked past the write timeout")
	}
	if !m.dead() {
		t.Fatal("the connection was not failed")
	}
}
