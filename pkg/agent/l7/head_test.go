package l7

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"testing"
)

// A request head written by writeRequestHead parses back to the same
// request; CR or LF inside a value become spaces (no header injection),
// a key that would break the head is dropped, and an empty User-Agent
// is not written.
func TestWriteRequestHead(t *testing.T) {
	req := &http.Request{Method: "GET", Host: "web.svc", URL: &url.URL{Path: "/a b", RawQuery: "q=1"},
		Header: http.Header{
			"User-Agent": {""},
			"X-Two":      {"1", "2"},
			"X-Inject":   {"v\r\nX-Evil: 1"},
			"Bad Key":    {"x"},
		}}
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	writeRequestHead(bw, req)
	bw.Flush()
	got, err := http.ReadRequest(bufio.NewReader(&buf))
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if got.Host != "web.svc" || got.URL.Path != "/a b" || got.URL.RawQuery != "q=1" {
		t.Fatalf("host %q url %v", got.Host, got.URL)
	}
	if v := got.Header.Values("X-Two"); len(v) != 2 || v[0] != "1" || v[1] != "2" {
		t.Fatalf("X-Two: %q", v)
	}
	if got.Header.Get("X-Evil") != "" || got.Header.Get("X-Inject") != "v  X-Evil: 1" {
		t.Fatalf("injection: %q", got.Header)
	}
	if _, ok := got.Header["User-Agent"]; ok {
		t.Fatalf("empty User-Agent written: %q", got.Header)
	}
	if len(got.Header) != 2 {
		t.Fatalf("headers: %q", got.Header)
	}
}
