package l7

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A body of unknown length (a gRPC stream, a chunked upload fed as
// answers come) is not read ahead for replay: the client may be waiting
// for a response before it sends more. A known-length body is kept.
func TestReplayableDoesNotReadAheadOfAStream(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "http://svc/x", pr)
	req.ContentLength = -1
	got := make(chan bool, 1)
	go func() { got <- replayable(req) }()
	select {
	case ok := <-got:
		if ok {
			t.Fatal("a stream of unknown length was made replayable")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("replayable blocked reading a stream the client feeds later")
	}

	req, _ = http.NewRequest("POST", "http://svc/x", strings.NewReader("body"))
	if !replayable(req) {
		t.Fatal("a 4-byte body is not replayable")
	}
	for range 2 {
		b, _ := req.GetBody()
		if s, _ := io.ReadAll(b); string(s) != "body" {
			t.Fatalf("replayed body %q", s)
		}
	}
}
