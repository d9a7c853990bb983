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

// The called side answering a 100-continue request without reading its
// body (a refused caller) closes the tunnel: the caller may still send
// the body, which must not be read as the next request.
func TestInboundExpectUnreadBodyCloses(t *testing.T) {
	srv := &Server{Node: "n2"}
	local := &Local{Namespace: "default", Service: "web", App: roundTripFunc(func(*http.Request) (*http.Response, error) {
		t.Error("the application was reached for a refused caller")
		return nil, io.EOF
	})}
	c, callee := net.Pipe()
	defer c.Close()
	go srv.ServeConn(callee, local, Caller{Workload: "default/client", Check: func() error { return io.ErrUnexpectedEOF }}, 80)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, _ := readResp(t, br, "POST")
	if resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Fatalf("status %d, close %v; want 403 with Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("tunnel left open: %v", err)
	}
}

// lateCloseRT closes the request body after RoundTrip returned, as the
// RoundTripper contract allows (http.Transport does on write errors).
type lateCloseRT struct{ panicked chan any }

func (rt lateCloseRT) RoundTrip(req *http.Request) (*http.Response, error) {
	body := req.Body
	go func() {
		defer func() { rt.panicked <- recover() }()
		time.Sleep(300 * time.Millisecond)
		body.Close()
	}()
	return &http.Response{StatusCode: 413, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Length": {"0"}}, Body: http.NoBody, ContentLength: 0, Request: req}, nil
}

// A request body still held by a transport when the tunnel is given up
// must not read from a buffer handed to another tunnel.
func TestInboundBodyOutlivesTunnel(t *testing.T) {
	rt := lateCloseRT{panicked: make(chan any, 1)}
	srv := &Server{Node: "n2"}
	local := &Local{Namespace: "default", Service: "web", App: rt}
	caller, callee := net.Pipe()
	defer caller.Close()
	go srv.ServeConn(callee, local, Caller{Workload: "default/client"}, 80)
	caller.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		io.WriteString(caller, "POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n")
		caller.Write(make([]byte, 1<<20))
	}()
	resp, err := http.ReadResponse(bufio.NewReader(caller), &http.Request{Method: "POST"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case p := <-rt.panicked:
		if p != nil {
			t.Fatalf("a late Close of the request body panicked: %v", p)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("late Close did not return")
	}
}

// The calling side closing after an unread 100-continue says so in the
// answer, so a pooling client does not reuse the connection.
func TestLoopExpectUnreadSaysClose(t *testing.T) {
	c, br := loopConn(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	})
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	if resp, _ := readResp(t, br, "POST"); !resp.Close {
		t.Fatal("answer lacks Connection: close, yet the connection is closed after it")
	}
}

// A request head over net/http's limit is answered 431, not read into
// memory, on both sides.
func TestHeadersTooLarge(t *testing.T) {
	big := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"
	c, br := loopConn(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	go io.WriteString(c, big)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("calling side: %v %v, want 431", resp, err)
	}
	c2, br2 := inboundTunnel(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	go io.WriteString(c2, big)
	resp, err = http.ReadResponse(br2, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("called side: %v %v, want 431", resp, err)
	}
}
