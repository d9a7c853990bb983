package l7

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// inboundTunnel serves one raw "tunnel" connection with Server.ServeConn
// in front of handler, and returns the caller's end.
func inboundTunnel(t *testing.T, handler http.Handler) (net.Conn, *bufio.Reader) {
	t.Helper()
	app := httptest.NewServer(handler)
	t.Cleanup(app.Close)
	port := netip.MustParseAddrPort(strings.TrimPrefix(app.URL, "http://")).Port()
	srv := &Server{Node: "n2"}
	local := &Local{Namespace: "default", Service: "web", App: AppTransport((&net.Dialer{}).DialContext)}
	caller, callee := net.Pipe()
	t.Cleanup(func() { caller.Close() })
	go srv.ServeConn(callee, local, Caller{Workload: "default/client"}, port)
	caller.SetDeadline(time.Now().Add(10 * time.Second))
	return caller, bufio.NewReader(caller)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// Requests sent back to back on one tunnel are answered in order, HEAD
// without a body, and hop-by-hop headers go no further than the tunnel.
func TestInboundKeepAliveHeadAndHopHeaders(t *testing.T) {
	c, br := inboundTunnel(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Keep-Alive", "timeout=5") // hop-by-hop: must not reach the caller
		io.WriteString(w, "path="+r.URL.Path+" hop="+r.Header.Get("X-Hop")+" host="+r.Host)
	}))
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: web.svc\r\nConnection: X-Hop\r\nX-Hop: secret\r\n\r\n"+
		"HEAD /b HTTP/1.1\r\nHost: web.svc\r\n\r\n"+
		"GET /c HTTP/1.1\r\nHost: web.svc\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if body != "path=/a hop= host=web.svc" || resp.Header.Get("Keep-Alive") != "" {
		t.Fatalf("first answer %q, Keep-Alive %q", body, resp.Header.Get("Keep-Alive"))
	}
	resp, body = readResp(t, br, "HEAD")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("path=/b hop= host=web.svc")) {
		t.Fatalf("HEAD: %d, body %q, length %d", resp.StatusCode, body, resp.ContentLength)
	}
	if _, body = readResp(t, br, "GET"); body != "path=/c hop= host=web.svc" {
		t.Fatalf("third answer %q", body)
	}
}

// A response of unknown length is relayed as it comes (a stream's first
// event arrives while the application still holds the rest), with its
// trailers.
func TestInboundStreamsAndTrailers(t *testing.T) {
	release := make(chan struct{})
	c, br := inboundTunnel(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second\n")
		w.Header().Set("X-Sum", "2")
	}))
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: web.svc\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first event %q, %v: not relayed before the stream ended", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(rest), "second\n") || resp.Trailer.Get("X-Sum") != "2" {
		t.Fatalf("rest %q, trailer %v", rest, resp.Trailer)
	}
}

// A caller waiting for 100 Continue gets it once the application asks for
// the body, and the body arrives whole.
func TestInboundExpectContinue(t *testing.T) {
	c, br := inboundTunnel(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "echo="+string(b))
	}))
	io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: web.svc\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 100 ") {
		t.Fatalf("want 100 Continue before the body, got %q, %v", status, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue not ended: %q", blank)
	}
	io.WriteString(c, "hello")
	if _, body := readResp(t, br, "POST"); body != "echo=hello" {
		t.Fatalf("body %q", body)
	}
}

// A request that is not HTTP is answered 400 and the tunnel closed.
func TestInboundMalformedRequest(t *testing.T) {
	c, br := inboundTunnel(t, http.NotFoundHandler())
	io.WriteString(c, "GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("tunnel still open after a malformed request: %v", err)
	}
}
