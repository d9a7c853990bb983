package l7

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// loopConn serves h with serveLoop on one end of a pipe and returns the
// client's end.
func loopConn(t *testing.T, h http.HandlerFunc) (net.Conn, *bufio.Reader) {
	t.Helper()
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close() })
	go serveLoop(server, h, time.Minute, nil)
	client.SetDeadline(time.Now().Add(10 * time.Second))
	return client, bufio.NewReader(client)
}

// Pipelined requests are answered in order on one connection; a handler
// that sets no length is answered chunked, with the trailers it sets
// after the body; HEAD gets no body.
func TestLoopKeepAliveChunkedTrailersHead(t *testing.T) {
	c, br := loopConn(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sized" {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "sized")
			return
		}
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "chunk1 ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "chunk2")
		w.Header().Set("X-Sum", "2")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})
	io.WriteString(c, "GET /sized HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\nHEAD /sized HTTP/1.1\r\nHost: a\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if body != "sized" || resp.ContentLength != 5 {
		t.Fatalf("first: %q, length %d", body, resp.ContentLength)
	}
	resp, body = readResp(t, br, "GET")
	if body != "chunk1 chunk2" || len(resp.TransferEncoding) != 1 || resp.Trailer.Get("X-Sum") != "2" || resp.Trailer.Get("X-Late") != "yes" {
		t.Fatalf("second: %q, TE %v, trailers %v", body, resp.TransferEncoding, resp.Trailer)
	}
	resp, body = readResp(t, br, "HEAD")
	if body != "" || resp.ContentLength != 5 {
		t.Fatalf("HEAD: %q, length %d", body, resp.ContentLength)
	}
}

// HTTP/1.0 gets one answer and the connection closes; so does a request
// whose 100-continue the handler never asked for (the client may or may
// not send its body now, so nothing after it can be read).
func TestLoopClosesWhenItMust(t *testing.T) {
	for name, req := range map[string]string{
		"HTTP/1.0":          "GET / HTTP/1.0\r\n\r\n",
		"unread Expect":     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
		"Connection: close": "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, br := loopConn(t, func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "refused", http.StatusServiceUnavailable)
			})
			io.WriteString(c, req)
			status, err := br.ReadString('\n')
			if err != nil || !strings.Contains(status, " 503 ") {
				t.Fatalf("status line %q, %v", status, err)
			}
			if _, err := io.ReadAll(br); err != nil {
				t.Fatalf("connection not closed after the answer: %v", err)
			}
		})
	}
}

// A handler may take the connection over (an upgrade) and talk on it.
func TestLoopHijack(t *testing.T) {
	c, br := loopConn(t, func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		rw.WriteString("echo " + line)
		rw.Flush()
	})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "ping\n")
	if got, _ := br.ReadString('\n'); got != "echo ping\n" {
		t.Fatalf("after the upgrade: %q", got)
	}
}
