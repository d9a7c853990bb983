package health

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var dialer = &net.Dialer{}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

func httpServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/nowhere", http.StatusFound) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestProbeTCP(t *testing.T) {
	l := listen(t, "127.0.0.1:0")
	defer l.Close()
	if err := Probe(context.Background(), dialer, l.Addr().String(), Check{}); err != nil {
		t.Errorf("listening port: %v", err)
	}
	if err := Probe(context.Background(), dialer, closedPort(t), Check{}); err == nil {
		t.Error("closed port passed")
	}
}

func TestProbeHTTP(t *testing.T) {
	s := httpServer(t)
	addr := s.Listener.Addr().String()
	for path, pass := range map[string]bool{"/ok": true, "ok": true, "/moved": true, "/fail": false, "/missing": false} {
		err := Probe(context.Background(), dialer, addr, Check{Path: path})
		if (err == nil) != pass {
			t.Errorf("GET %s: err %v, want pass=%v", path, err, pass)
		}
	}
	start := time.Now()
	if err := Probe(context.Background(), dialer, addr, Check{Path: "/slow", Timeout: 100 * time.Millisecond}); err == nil {
		t.Error("GET /slow passed")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("a hung server took %v to fail, want about the 100ms timeout", took)
	}
}

type change struct {
	healthy bool
	err     error
	at      time.Time
}

// runMonitor starts m with changes sent on the returned channel.
func runMonitor(t *testing.T, m *Monitor) <-chan change {
	ch := make(chan change, 16)
	m.OnChange = func(healthy bool, err error) { ch <- change{healthy, err, time.Now()} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return ch
}

func next(t *testing.T, ch <-chan change, within time.Duration, healthy bool) change {
	t.Helper()
	select {
	case c := <-ch:
		if c.healthy != healthy {
			t.Fatalf("reported healthy=%v (%v), want %v", c.healthy, c.err, healthy)
		}
		return c
	case <-time.After(within):
		t.Fatalf("no change to healthy=%v within %v", healthy, within)
		return change{}
	}
}

func TestMonitorFollowsInstance(t *testing.T) {
	const interval = 200 * time.Millisecond
	l := listen(t, "127.0.0.1:0")
	addr := l.Addr().String()
	start := time.Now()
	ch := runMonitor(t, &Monitor{Dialer: dialer, Addr: addr, Check: Check{Interval: interval}})

	c := next(t, ch, 100*time.Millisecond, true)
	t.Logf("healthy after %v", c.at.Sub(start))

	stopped := time.Now()
	l.Close()
	c = next(t, ch, interval+100*time.Millisecond, false)
	t.Logf("unhealthy %v after stop: %v", c.at.Sub(stopped), c.err)

	l = listen(t, addr)
	defer l.Close()
	next(t, ch, interval+100*time.Millisecond, true)

	// Steady state reports nothing.
	select {
	case c := <-ch:
		t.Errorf("unexpected report %+v", c)
	case <-time.After(2 * interval):
	}
}

func TestMonitorNotHealthyUntilFirstPass(t *testing.T) {
	ch := runMonitor(t, &Monitor{Dialer: dialer, Addr: closedPort(t), Check: Check{Interval: 50 * time.Millisecond}})
	if c := next(t, ch, 100*time.Millisecond, false); c.err == nil {
		t.Error("unhealthy report without an error")
	}
	select {
	case c := <-ch:
		t.Errorf("repeated report %+v; only changes are reported", c)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestMonitorSetCheck(t *testing.T) {
	s := httpServer(t)
	m := &Monitor{Dialer: dialer, Addr: s.Listener.Addr().String(), Check: Check{Interval: time.Hour}}
	ch := runMonitor(t, m)
	next(t, ch, 100*time.Millisecond, true) // TCP connect passes

	// An hour-long interval: the new check must not wait it out.
	m.SetCheck(Check{Path: "/fail", Interval: 200 * time.Millisecond})
	c := next(t, ch, 100*time.Millisecond, false)
	if !strings.Contains(c.err.Error(), "500") {
		t.Errorf("err %v, want the HTTP status", c.err)
	}
	m.SetCheck(Check{Path: "/ok", Interval: 200 * time.Millisecond})
	next(t, ch, 300*time.Millisecond, true)
}
