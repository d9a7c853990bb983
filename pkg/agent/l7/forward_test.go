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

func TestForwardableRequests(t *testing.T) {
	for raw, want := range map[string]bool{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n":                                        true,
		"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n":                                       true,
		"GET / HTTP/1.0\r\nHost: a\r\n\r\n":                                        false, // closes after the answer
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx":                 false, // a body
		"DELETE / HTTP/1.1\r\nHost: a\r\n\r\n":                                     false, // not the fast transport's
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n":                   false,
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n":  false,
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n":                false,
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": false,
	} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if got := forwardable(r); got != want {
			t.Errorf("forwardable(%q) = %v, want %v", raw, got, want)
		}
	}
}

// rawGet sends a request head on a fresh connection to the mesh and
// returns the connection and its reader.
func rawGet(t *testing.T, m *mesh, head string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// The direct path streams a body of unknown length as it comes (the
// first chunk reaches the client while the backend still holds the
// rest), forwards the trailers, drops hop-by-hop headers of the
// response, and adds no User-Agent the client did not send.
func TestForwardStreamsAndKeepsHeaderRules(t *testing.T) {
	release := make(chan struct{})
	var ua []string
	var sawUA bool
	b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
		ua, sawUA = r.Header["User-Agent"]
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		io.WriteString(w, "first ")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "second")
		w.Header().Set("X-Sum", "42")
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})
	m := newMesh(t, Policy{}, b)
	_, br := rawGet(t, m, "GET /s HTTP/1.1\r\nHost: web.svc\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len("first "))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first " {
		close(release)
		t.Fatalf("first chunk before the backend finished: %q %v", first, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest: %q %v", rest, err)
	}
	if resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "yes" {
		t.Fatalf("trailers: %v", resp.Trailer)
	}
	if resp.Header.Get("X-Hop") != "" {
		t.Fatalf("a hop-by-hop header of the response passed: %v", resp.Header)
	}
	if sawUA && (len(ua) != 1 || ua[0] != "") {
		t.Fatalf("the backend saw a User-Agent the client never sent: %q", ua)
	}
	if c := m.lastCall(); c.Status != 200 || c.ResponseBytes != int64(len("first second")) {
		t.Fatalf("recorded %d, %d bytes", c.Status, c.ResponseBytes)
	}
}

// An answer the backend breaks off mid-body must not reach the client
// as complete: the client's connection ends before the body does, sized
// or chunked, and the call is still recorded.
func TestForwardAbortsAnAnswerCutShort(t *testing.T) {
	for _, sized := range []bool{true, false} {
		b := newBackend(t, "b", func(w http.ResponseWriter, r *http.Request) {
			if sized {
				w.Header().Set("Content-Length", "100")
			}
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // net/http resets the connection
		})
		m := newMesh(t, Policy{}, b)
		_, br := rawGet(t, m, "GET /cut HTTP/1.1\r\nHost: web.svc\r\n\r\n")
		// The head may or may not have left before the abort; either
		// way the client must not read a whole answer.
		if resp, err := http.ReadResponse(br, nil); err == nil {
			body, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Fatalf("sized=%v: the client read %q as a complete body", sized, body)
			}
		}
		if c := m.lastCall(); c.Status != 200 {
			t.Fatalf("sized=%v: recorded status %d", sized, c.Status)
		}
	}
}
