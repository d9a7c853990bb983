package hbone

import (
	"io"
	"testing"
)

// BenchmarkTunnelRoundTrip is a 1 KiB echo over a warm tunnel: client →
// HBONE server → app → back.
func BenchmarkTunnelRoundTrip(b *testing.B) {
	e := newTestEnv(b, nil)
	c := e.connect(b)
	defer c.Close()
	msg := make([]byte, 1024)
	got := make([]byte, len(msg))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTunnelOpen is Connect on a warm pool (no TLS handshake) plus
// Close: one CONNECT exchange, an app dial on the server side, teardown.
func BenchmarkTunnelOpen(b *testing.B) {
	e := newTestEnv(b, nil)
	e.connect(b).Close()
	b.ReportAllocs()
	for b.Loop() {
		e.connect(b).Close()
	}
	b.StopTimer()
	if s := e.pool.Stats(); s.Handshakes != 1 {
		b.Fatalf("stats = %+v, want one handshake", s)
	}
}

// BenchmarkTunnelBulk is one-way throughput: the client writes 64 KiB
// chunks, the server's app reads them (the echo app's copy back is
// discarded by the client side below).
func BenchmarkTunnelBulk(b *testing.B) {
	e := newTestEnv(b, nil)
	c := e.connect(b)
	defer c.Close()
	go io.Copy(io.Discard, readerOnly{c})
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

type readerOnly struct{ r io.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }
