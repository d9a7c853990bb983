package l7

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingDialer dials addr and counts the connections it opened.
type countingDialer struct{ n atomic.Int64 }

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func newTestTransport(d *countingDialer) *Transport {
	return &Transport{Dial: d.dial, Fallback: &http.Transport{DialContext: d.dial, DisableCompression: true}}
}

func roundTrip(t *testing.T, tr http.RoundTripper, ctx context.Context, method, url, body string) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, rd)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func TestTransportReusesConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	}))
	defer srv.Close()
	d := &countingDialer{}
	tr := newTestTransport(d)
	defer tr.CloseIdleConnections()
	for i := range 5 {
		_, got, err := roundTrip(t, tr, context.Background(), "GET", srv.URL+"/a", "")
		if err != nil || got != "GET /a " {
			t.Fatalf("GET %d: %q, %v", i, got, err)
		}
	}
	if n := d.n.Load(); n != 1 {
		t.Errorf("5 GETs one after another dialled %d connections, want 1", n)
	}
	// A HEAD answer has no body to read: the connection is free at once.
	resp, _, err := roundTrip(t, tr, context.Background(), "HEAD", srv.URL+"/h", "")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v", err)
	}
	// A request with a body takes the fallback, with its own connection.
	if _, got, err := roundTrip(t, tr, context.Background(), "POST", srv.URL+"/p", "hello"); err != nil || got != "POST /p hello" {
		t.Fatalf("POST: %q, %v", got, err)
	}
	if _, _, err := roundTrip(t, tr, context.Background(), "GET", srv.URL+"/a", ""); err != nil {
		t.Fatal(err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("dialled %d connections, want 2 (fast path, fallback)", n)
	}
}

func TestTransportRetriesConnectionClosedByPeer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	d := &countingDialer{}
	tr := newTestTransport(d)
	defer tr.CloseIdleConnections()
	if _, _, err := roundTrip(t, tr, context.Background(), "GET", srv.URL, ""); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections() // the pooled connection is now closed by the server
	time.Sleep(50 * time.Millisecond)
	if _, got, err := roundTrip(t, tr, context.Background(), "GET", srv.URL, ""); err != nil || got != "ok" {
		t.Fatalf("GET after the server closed the pooled connection: %q, %v", got, err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("dialled %d connections, want 2", n)
	}
}

func TestTransportCancelClosesConnection(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	defer close(release)
	d := &countingDialer{}
	tr := newTestTransport(d)
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, err := roundTrip(t, tr, ctx, "GET", srv.URL+"/slow", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if _, got, err := roundTrip(t, tr, context.Background(), "GET", srv.URL+"/", ""); err != nil || got != "ok" {
		t.Fatalf("GET after a cancelled one: %q, %v", got, err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("dialled %d connections, want 2: a cancelled request's connection is not reused", n)
	}
}

func TestTransportBodyClosedEarlyIsNotReused(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))
	defer srv.Close()
	d := &countingDialer{}
	tr := newTestTransport(d)
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 10))
	resp.Body.Close()
	if _, got, err := roundTrip(t, tr, context.Background(), "GET", srv.URL, ""); err != nil || len(got) != len(big) {
		t.Fatalf("GET: %d bytes, %v", len(got), err)
	}
	if n := d.n.Load(); n != 2 {
		t.Errorf("dialled %d connections, want 2", n)
	}
}
