// Command hms-testapp is a plain application for tests, benchmarks and the
// demo: HTTP, echo, bulk and DNS servers, and the clients that measure
// them. It knows nothing of the mesh.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/hms-node/hms-node/internal/testapp"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: hms-testapp http|https|grpc|grpc-client|banner|banner-client|upgrade-client|hload|echo|bulk-server|dns|bulk|rr|peer|loop|dnsq [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen or dial address")
	body := fs.String("body", "hello from hms-testapp", "HTTP response body")
	name := fs.String("name", "", "DNS name to answer")
	ip := fs.String("ip", "", "DNS answer")
	size := fs.Int("size", 64, "request/response message size")
	n := fs.Int("n", 1000, "request/response count")
	bytes := fs.Int64("bytes", 1<<20, "bulk bytes")
	dir := fs.String("dir", "down", "bulk direction: down or up")
	v6 := fs.Bool("v6", false, "peer: dial from an AF_INET6 socket (v4-mapped)")
	want := fs.String("want", "", "loop: text every reply must contain")
	interval := fs.Duration("interval", 10*time.Millisecond, "loop: pause between connections")
	duration := fs.Duration("duration", 5*time.Second, "loop: how long to run")
	pause := fs.Duration("pause", 0, "rr: pause after each round trip; bulk: between its header and the data")
	qps := fs.Float64("qps", 0, "hload: requests per second (0 = closed loop)")
	conc := fs.Int("conc", 4, "hload: connections")
	cert := fs.String("cert", "", "https: certificate PEM file")
	key := fs.String("key", "", "https: key PEM file")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "https":
		err := http.ListenAndServeTLS(*addr, *cert, *key, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s path=%s tls=%v\n", *body, r.URL.Path, r.TLS != nil)
		}))
		fmt.Fprintln(os.Stderr, "hms-testapp:", err)
		os.Exit(1)
	case "loop":
		res := testapp.ConnectLoop(*addr, *want, *interval, *duration)
		json.NewEncoder(os.Stdout).Encode(res)
		return
	case "hload":
		res := testapp.HTTPLoad(*addr, *name, *qps, *conc, *duration)
		json.NewEncoder(os.Stdout).Encode(res)
		return
	case "banner-client":
		if err := testapp.BannerClient(*addr, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "hms-testapp:", err)
			os.Exit(1)
		}
		return
	case "upgrade-client":
		if err := testapp.UpgradeClient(*addr, *name, *body, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "hms-testapp:", err)
			os.Exit(1)
		}
		return
	case "grpc-client":
		if err := testapp.GRPCClient(*addr, *name, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "hms-testapp:", err)
			os.Exit(1)
		}
		return
	case "dnsq":
		got, err := testapp.QueryUnconnected(*addr, *name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hms-testapp:", err)
			os.Exit(1)
		}
		fmt.Println(got)
		return
	}
	if err := run(os.Args[1], *addr, *body, *name, *ip, *size, *n, *bytes, *dir, *v6, *pause); err != nil {
		fmt.Fprintln(os.Stderr, "hms-testapp:", err)
		os.Exit(1)
	}
}

func run(mode, addr, body, name, ip string, size, n int, bytes int64, dir string, v6 bool, pause time.Duration) error {
	switch mode {
	case "http":
		return http.ListenAndServe(addr, &testapp.HTTPApp{Body: body})
	case "grpc":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		return testapp.ServeGRPC(l, name)
	case "banner":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		return testapp.ServeBanner(l, body)
	case "echo", "bulk-server":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return err
		}
		if mode == "echo" {
			return testapp.ServeEcho(l)
		}
		return testapp.ServeBulk(l)
	case "dns":
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return testapp.ServeDNS(pc, name, net.ParseIP(ip))
	case "bulk":
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		start := time.Now()
		sum, got, err := testapp.BulkAfter(c, dir, bytes, pause)
		if err != nil {
			return err
		}
		secs := time.Since(start).Seconds()
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"sha256": sum, "bytes": got, "seconds": secs, "mbps": float64(got) / secs / 1e6})
	case "rr":
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		res, err := testapp.RequestResponse(c, size, n, pause)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(res)
	case "peer":
		return peer(addr, v6)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// peer dials addr, prints what getpeername says, then one line the server
// sent. With v6 the socket is AF_INET6 and the address v4-mapped, as an
// application using dual-stack sockets does.
func peer(addr string, v6 bool) error {
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return err
	}
	family, sa := syscall.AF_INET, syscall.Sockaddr(&syscall.SockaddrInet4{Port: ap.Port, Addr: [4]byte(ap.IP.To4())})
	if v6 {
		var a16 [16]byte
		copy(a16[:], ap.IP.To16())
		family, sa = syscall.AF_INET6, &syscall.SockaddrInet6{Port: ap.Port, Addr: a16}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Connect(fd, sa); err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	got, err := syscall.Getpeername(fd)
	if err != nil {
		return err
	}
	switch p := got.(type) {
	case *syscall.SockaddrInet4:
		fmt.Printf("peer=%s:%d\n", net.IP(p.Addr[:]), p.Port)
	case *syscall.SockaddrInet6:
		fmt.Printf("peer=[%s]:%d\n", netip.AddrFrom16(p.Addr), p.Port) // keeps ::ffff: visible
	}
	if _, err := syscall.Write(fd, []byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	m, _ := syscall.Read(fd, buf)
	fmt.Printf("reply=%q\n", string(buf[:m]))
	return nil
}
