package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestTunnelBytesBothWaysAndHalfClose(t *testing.T) {
	e := newTestEnv(t, nil)
	c := e.connect(t)
	defer c.Close()

	data := make([]byte, 4<<20+123)
	rand.Read(data)
	go func() {
		for p := data; len(p) > 0; { // uneven writes
			n := min(len(p), 1+len(p)%70000)
			if _, err := c.Write(p[:n]); err != nil {
				t.Error(err)
				return
			}
			p = p[n:]
		}
		if err := c.(closeWriter).CloseWrite(); err != nil {
			t.Error(err)
		}
	}()
	h := sha256.New()
	n, err := copyBufN(h, c) // ends only at EOF: the app saw our half-close and echoed its own
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if n != int64(len(data)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echoed %d bytes with sha256 %x; sent %d with %x", n, h.Sum(nil), len(data), want)
	}
}

func copyBufN(w io.Writer, r io.Reader) (int64, error) {
	cw := &countWriter{w: w}
	err := copyBuf(cw, r)
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return c.w.Write(p) }

// The request/response shape that needs half-close: send, CloseWrite, and
// read the answer to EOF.
func TestHalfCloseRequestResponse(t *testing.T) {
	e := newTestEnv(t, nil)
	c := e.connect(t)
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.(closeWriter).CloseWrite()
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write after CloseWrite succeeded")
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("ReadAll = %q, %v; want ping, EOF", got, err)
	}
}

func TestPoolSharesOneConnection(t *testing.T) {
	e := newTestEnv(t, nil)
	const n = 50
	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			conns[i] = e.connect(t)
			roundTrip(t, conns[i], []byte("hello"))
		})
	}
	wg.Wait()
	if s := e.pool.Stats(); s.Handshakes != 1 || s.Connections != 1 || s.Streams != n {
		t.Fatalf("stats = %+v, want 1 handshake, 1 connection, %d streams", s, n)
	}
	for _, c := range conns {
		c.Close()
	}
	if s := e.pool.Stats(); s.Streams != 0 || s.Connections != 1 {
		t.Fatalf("after close: %+v, want 0 streams on 1 warm connection", s)
	}
}

func TestMaxStreamsOpensAnotherConnection(t *testing.T) {
	e := newTestEnv(t, func(e *testEnv) { e.pool.MaxStreams = 4 })
	var conns []net.Conn
	for range 5 {
		c := e.connect(t)
		roundTrip(t, c, []byte("x"))
		conns = append(conns, c)
	}
	if s := e.pool.Stats(); s.Connections != 2 || s.Handshakes != 2 {
		t.Fatalf("stats = %+v, want 2 connections", s)
	}
	for _, c := range conns {
		c.Close()
	}
	e.connect(t).Close() // room again: no new handshake
	if s := e.pool.Stats(); s.Handshakes != 2 {
		t.Fatalf("stats = %+v, want no third handshake", s)
	}
}

func TestDenied(t *testing.T) {
	e := newTestEnv(t, func(e *testEnv) {
		e.srv.Handle = func(context.Context, *Request) (net.Conn, error) {
			return nil, errors.Join(errors.New("policy: frontend not allowed"), ErrDenied)
		}
	})
	_, err := e.pool.Connect(context.Background(), e.key, e.app.ln.Addr().String(), nil)
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("Connect err = %v, want ErrDenied", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("Connect err = %v, want StatusError 403", err)
	}
	if n := e.app.accepted.Load(); n != 0 {
		t.Fatalf("app got %d connections, want 0", n)
	}
	if s := e.pool.Stats(); s.Streams != 0 {
		t.Fatalf("stats = %+v: denied tunnel kept its slot", s)
	}
}

func TestServerSeesIdentityAuthorityAndHeaders(t *testing.T) {
	e := newTestEnv(t, nil)
	hdr := http.Header{
		"Forwarded":   {`for="10.0.0.7:43210"`},
		"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
	authority := e.app.ln.Addr().String()
	c, err := e.pool.Connect(context.Background(), e.key, authority, hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, []byte("x"))
	e.mu.Lock()
	r := e.requests[0]
	e.mu.Unlock()
	if r.Authority != authority {
		t.Errorf("Authority = %q, want %q", r.Authority, authority)
	}
	for k, v := range hdr {
		if !slices.Equal(r.Header[k], v) {
			t.Errorf("header %s = %q, want %q", k, r.Header[k], v)
		}
	}
	for _, k := range []string{"User-Agent", "Accept-Encoding"} {
		if v, ok := r.Header[k]; ok {
			t.Errorf("client added %s: %q", k, v)
		}
	}
	certs := r.State.PeerCertificates
	if len(certs) == 0 || len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != srcID {
		t.Fatalf("peer certificate does not name %s", srcID)
	}
	if r.Local == nil || r.Remote == nil || r.Remote.String() != c.LocalAddr().String() {
		t.Errorf("Local/Remote = %v/%v, client local %v", r.Local, r.Remote, c.LocalAddr())
	}
	if c.RemoteAddr().String() != authority {
		t.Errorf("tunnel RemoteAddr = %v, want %s", c.RemoteAddr(), authority)
	}
}

func TestRetire(t *testing.T) {
	e := newTestEnv(t, nil)
	old := e.connect(t)
	roundTrip(t, old, []byte("before"))
	e.pool.Retire(func(k Key) bool { return k.Dst == dstID })

	fresh := e.connect(t)
	defer fresh.Close()
	if s := e.pool.Stats(); s.Handshakes != 2 || s.Connections != 2 {
		t.Fatalf("stats = %+v, want a second handshake with the old conn draining", s)
	}
	roundTrip(t, old, []byte("still works"))
	roundTrip(t, fresh, []byte("new"))
	old.Close()
	deadline := time.Now().Add(2 * time.Second)
	for e.pool.Stats().Connections != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v, want the retired conn closed", e.pool.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	fresh2 := e.connect(t)
	fresh2.Close()
	if s := e.pool.Stats(); s.Handshakes != 2 {
		t.Fatalf("stats = %+v: retired connection reused or new one not", s)
	}
}

func TestCloseEitherEndNoLeak(t *testing.T) {
	e := newTestEnv(t, nil)
	warm := e.connect(t) // pool conn, server conn and their goroutines stay
	roundTrip(t, warm, []byte("warm"))
	warm.Close()
	<-e.app.conns
	time.Sleep(50 * time.Millisecond)
	base := runtime.NumGoroutine()

	for range 10 {
		// Client closes: the app reads EOF.
		c := e.connect(t)
		roundTrip(t, c, []byte("a"))
		<-e.app.conns
		c.Close() // the echo goroutine reads EOF and exits; settle checks it

		// App closes: the client reads EOF.
		c = e.connect(t)
		roundTrip(t, c, []byte("b"))
		app := <-e.app.conns
		app.Close()
		buf := make([]byte, 1)
		if n, err := c.Read(buf); err != io.EOF {
			t.Fatalf("client Read after app close = %d, %v; want EOF", n, err)
		}
		c.Close()
	}
	settle(t, base, runtime.NumGoroutine)
}

func TestClientCloseGivesAppEOF(t *testing.T) {
	appSide := make(chan net.Conn, 1)
	e := newTestEnv(t, func(e *testEnv) {
		e.srv.Handle = func(context.Context, *Request) (net.Conn, error) {
			a, b := net.Pipe() // the test holds the app end itself
			appSide <- b
			return a, nil
		}
	})
	c := e.connect(t)
	app := <-appSide
	c.Write([]byte("z"))
	buf := make([]byte, 8)
	if n, err := app.Read(buf); n != 1 || err != nil {
		t.Fatalf("app Read = %d, %v", n, err)
	}
	c.Close()
	app.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := app.Read(buf); err != io.EOF {
		t.Fatalf("app Read after client Close = %v, want EOF", err)
	}
}

func TestServerRequiresClientCert(t *testing.T) {
	e := newTestEnv(t, func(e *testEnv) {
		e.pool.TLS = func(k Key) *tls.Config { return e.ca.clientTLS(t, "", k.Dst) }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := e.pool.Connect(ctx, e.key, e.app.ln.Addr().String(), nil); err == nil {
		c.Close()
		t.Fatal("Connect without a client certificate succeeded")
	}
	if n := e.app.accepted.Load(); n != 0 {
		t.Fatalf("app got %d connections, want 0", n)
	}
}

func TestConnectHonoursContext(t *testing.T) {
	block := make(chan struct{})
	e := newTestEnv(t, func(e *testEnv) {
		e.srv.Handle = func(ctx context.Context, _ *Request) (net.Conn, error) {
			select {
			case <-block:
				return nil, errors.New("test over")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	})
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := e.pool.Connect(ctx, e.key, "10.0.0.1:80", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect err = %v, want deadline exceeded", err)
	}
	if s := e.pool.Stats(); s.Streams != 0 {
		t.Fatalf("stats = %+v: cancelled connect kept its slot", s)
	}
}

func TestPingPongLatency(t *testing.T) {
	e := newTestEnv(t, nil)
	c := e.connect(t)
	defer c.Close()
	b := []byte{1}
	const n = 2000
	lat := make([]time.Duration, n)
	for i := range lat {
		start := time.Now()
		roundTrip(t, c, b)
		lat[i] = time.Since(start)
	}
	slices.Sort(lat)
	p50 := lat[n/2]
	t.Logf("1-byte ping-pong over a tunnel: p50 %v p99 %v", p50, lat[n*99/100])
	if p50 > time.Millisecond {
		t.Fatalf("p50 %v, want sub-millisecond (small writes buffered?)", p50)
	}
}

func TestServerCloseLetsTunnelsFinish(t *testing.T) {
	e := newTestEnv(t, nil)
	c := e.connect(t)
	defer c.Close()
	roundTrip(t, c, []byte("before"))
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, []byte("after close")) // GOAWAY stops new streams, not this one
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c2, err := e.pool.Connect(ctx, e.key, e.app.ln.Addr().String(), nil); err == nil {
		c2.Close()
		t.Fatal("Connect after server Close succeeded")
	}
}
