package l7

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// benchBody is the e2e bench's 1 KiB response.
var benchBody = bytes.Repeat([]byte("x"), 1024)

// benchApp is the application: a real HTTP server on loopback.
func benchApp(b *testing.B) netip.AddrPort {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1024")
		w.Write(benchBody)
	}))
	b.Cleanup(srv.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
}

// serveLoopback accepts on a loopback listener and serves each
// connection with serve.
func serveLoopback(b *testing.B, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// relay is the L4 path's shape: bytes copied both ways to addr.
func relay(addr string) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		u, err := net.Dial("tcp", addr)
		if err != nil {
			return
		}
		defer u.Close()
		go io.Copy(u, c)
		io.Copy(c, u)
	}
}

// l7Chain is the L7 path: application → Client (calling agent) → a
// pooled connection → Server (called agent) → application, every hop a
// real loopback connection.
func l7Chain(b *testing.B, app netip.AddrPort) string {
	srv := &Server{Node: "n2"}
	local := &Local{Namespace: "default", Service: "web", App: AppTransport((&net.Dialer{}).DialContext)}
	in := serveLoopback(b, func(c net.Conn) { srv.ServeConn(c, local, Caller{Workload: "default/client"}, app.Port()) })
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", in)
	}
	tr := &Transport{Dial: dial, Fallback: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(tr.CloseIdleConnections)
	send := senderFunc(func(r *http.Request, _ netip.AddrPort) (*http.Response, error) { return tr.RoundTrip(r) })
	cl := &Client{Node: "n1"}
	dst := &Destination{Namespace: "default", Service: "web",
		Policy: func() Policy { return Policy{} },
		Pick: func([]netip.AddrPort) (netip.AddrPort, func(error, time.Duration), bool) {
			return app, func(error, time.Duration) {}, true
		}}
	return serveLoopback(b, func(c net.Conn) { cl.ServeConn(c, Source{Workload: "default/client"}, dst, send) })
}

// benchGet runs b.N GETs on one keep-alive connection, one at a time,
// so ns/op is the latency of one request.
func benchGet(b *testing.B, addr string) {
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	get := func() {
		resp, err := c.Get("http://" + addr + "/b")
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != 1024 {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	get() // connections up
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		get()
	}
}

// BenchmarkRelay is two byte relays in a row (the L4 shape), the
// baseline BenchmarkL7 is compared with.
func BenchmarkRelay(b *testing.B) {
	app := benchApp(b)
	benchGet(b, serveLoopback(b, relay(serveLoopback(b, relay(app.String())))))
}

// BenchmarkL7 is one request through both sides of the L7 proxy.
func BenchmarkL7(b *testing.B) {
	benchGet(b, l7Chain(b, benchApp(b)))
}
