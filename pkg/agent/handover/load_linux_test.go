package handover

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testAgent serves one listener: every connection gets a "ok" reply.
type testAgent struct {
	name   string
	ln     net.Listener
	served atomic.Int64
	loop   sync.WaitGroup // the accept loop
	conns  sync.WaitGroup // in-flight connections (drained on stop)
}

func startAgent(name string, ln net.Listener) *testAgent {
	a := &testAgent{name: name, ln: ln}
	a.loop.Add(1)
	go func() {
		defer a.loop.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go func() {
				defer a.conns.Done()
				defer c.Close()
				c.Write([]byte("ok"))
				a.served.Add(1)
			}()
		}
	}()
	return a
}

// stop stops accepting and drains, as an old agent does after a commit.
func (a *testAgent) stop() {
	a.ln.Close()
	a.loop.Wait()
	a.conns.Wait()
}

// handOver moves from's listener to a new agent named name, the way two
// agent processes do over the local socket.
func handOver(from *testAgent, name string) (*testAgent, error) {
	old, nu, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer old.Close()
	defer nu.Close()
	done := make(chan error, 1)
	go func() {
		done <- Offer(old, nil, []Socket{{Name: "l", Conn: from.ln.(syscall.Conn)}}, time.Now().Add(10*time.Second))
	}()
	rec, err := Take(nu, time.Now().Add(10*time.Second))
	if err != nil {
		return nil, err
	}
	ln, err := rec.Listener("l")
	if err != nil {
		return nil, err
	}
	to := startAgent(name, ln) // serve before committing: no gap
	if err := Commit(nu); err != nil {
		return nil, err
	}
	if err := <-done; err != nil {
		return nil, fmt.Errorf("offer: %w", err)
	}
	from.stop()
	return to, nil
}

// TestNoFailedConnectDuringHandover connects 1000 times, one every ~1ms,
// while the listener is handed over twice (A → B → C), and requires every
// connect to succeed and be answered.
func TestNoFailedConnectDuringHandover(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	agents := []*testAgent{startAgent("A", ln)}

	const total = 1000
	var failed atomic.Int64
	var firstErr atomic.Value
	var clients sync.WaitGroup
	handedOver := make(chan error, 1)
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	for i := 0; i < total; i++ {
		<-tick.C
		if i == 300 || i == 600 {
			go func(name string) {
				a, err := handOver(agents[len(agents)-1], name)
				if err == nil {
					agents = append(agents, a)
				}
				handedOver <- err
			}(map[int]string{300: "B", 600: "C"}[i])
		}
		if i == 450 || i == total-1 {
			if err := <-handedOver; err != nil {
				t.Fatalf("handover: %v", err)
			}
		}
		clients.Add(1)
		go func() {
			defer clients.Done()
			if err := connectOnce(addr); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	tick.Stop()
	clients.Wait()
	last := agents[len(agents)-1]
	last.stop()
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("test took %v", d)
	}
	var served int64
	for _, a := range agents {
		t.Logf("agent %s served %d", a.name, a.served.Load())
		served += a.served.Load()
	}
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d connects failed; first: %v", n, total, firstErr.Load())
	}
	if len(agents) != 3 || served != total {
		t.Fatalf("%d agents served %d connections, want 3 agents and %d", len(agents), served, total)
	}
}

func connectOnce(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "ok" {
		return fmt.Errorf("reply %q, want ok", b)
	}
	return nil
}
