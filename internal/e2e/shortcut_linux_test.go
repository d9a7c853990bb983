package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testapp"
)

// Same-node L4 connections move into the kernel once the agent has relayed
// them up to date (datapath.Shortcut), and nothing is lost or reordered on
// the way: a client that streams from its first byte through an auto
// service (whose sniff holds the first bytes at the agent, so the switch
// must wait for them), both directions through a tcp service, and a
// server-first protocol. A server killed mid-stream ends the client's
// connection instead of leaving it hanging.
func TestPrivilegedSameNodeShortcut(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: sc-auto\nport: 7400\n---\nname: sc-tcp\nport: 7401\nprotocol: tcp\n---\nname: sc-banner\nport: 7402\nprotocol: tcp\n---\nname: sc-doomed\nport: 7403\nprotocol: tcp\n")
	client := m.n1.MustAddPod(t, "client")
	auto, tcp, banner, doomed := m.n1.MustAddPod(t, "auto"), m.n1.MustAddPod(t, "tcp"), m.n1.MustAddPod(t, "banner"), m.n1.MustAddPod(t, "doomed")
	startServer(t, auto, 7400, testApp, "bulk-server", "--addr", ":7400")
	startServer(t, tcp, 7401, testApp, "bulk-server", "--addr", ":7401")
	startServer(t, banner, 7402, testApp, "banner", "--addr", ":7402", "--body", "shortcut.hms")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	doomedSrv, err := doomed.Start(ctx, testApp, "bulk-server", "--addr", ":7403")
	if err != nil {
		t.Fatal(err)
	}
	m.a1.enroll(client, "client")
	m.a1.enroll(auto, "sc-auto", 7400)
	m.a1.enroll(tcp, "sc-tcp", 7401)
	m.a1.enroll(banner, "sc-banner", 7402)
	m.a1.enroll(doomed, "sc-doomed", 7403)
	waitFor(t, 15*time.Second, "all healthy", func() bool {
		for _, s := range []string{"sc-auto", "sc-tcp", "sc-banner", "sc-doomed"} {
			if m.control.healthyInstances(s) != 1 {
				return false
			}
		}
		return true
	})

	before := m.a1.counters()
	const size = 64 << 20
	want := testapp.PatternSum(size)
	conns := 0
	for _, tc := range []struct{ addr, dir string }{
		{"sc-auto.svc:7400", "up"}, {"sc-auto.svc:7400", "down"},
		{"sc-tcp.svc:7401", "up"}, {"sc-tcp.svc:7401", "down"},
	} {
		var out string
		var err error
		waitFor(t, 10*time.Second, "bulk "+tc.dir+" to "+tc.addr, func() bool {
			out, err = m.inPod(t, client, testApp, "bulk", "--addr", tc.addr, "--dir", tc.dir, "--bytes", fmt.Sprint(size))
			return err == nil
		})
		conns++
		var res struct {
			Sha256 string `json:"sha256"`
			Bytes  int64  `json:"bytes"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("bulk %s %s output %q: %v", tc.dir, tc.addr, out, err)
		}
		if res.Bytes != size || res.Sha256 != want {
			t.Fatalf("bulk %s %s: %d bytes, sha256 %s; want %d, %s", tc.dir, tc.addr, res.Bytes, res.Sha256, size, want)
		}
	}
	out, err := m.inPod(t, client, testApp, "banner-client", "--addr", "sc-banner.svc:7402")
	if err != nil {
		t.Fatalf("banner through sc-banner: %v\n%s", err, out)
	}
	conns++
	mustContain(t, out, `greeting="220 shortcut.hms ready"`)
	mustContain(t, out, `reply="250 HELO hms"`)
	after := m.a1.counters()
	flips, direct := after["shortcut_on"]-before["shortcut_on"], after["msg_shortcut"]-before["msg_shortcut"]
	t.Logf("%d connections: shortcut_on +%d, msg_shortcut +%d, msg_redirected +%d", conns, flips, direct, after["msg_redirected"]-before["msg_redirected"])
	// Every direction of every connection moves, except one whose sender
	// never paused for the relay to catch up (1024 tries): allow one per
	// connection to stay relayed.
	if flips < uint64(conns) {
		t.Fatalf("only %d directions of %d connections moved into the kernel", flips, conns)
	}
	if direct < 100 {
		t.Fatalf("only %d messages went straight from app to app", direct)
	}

	// The server dies mid-stream: the client's transfer fails, and soon.
	done := make(chan error, 1)
	go func() {
		_, err := m.inPod(t, client, testApp, "bulk", "--addr", "sc-doomed.svc:7403", "--dir", "up", "--bytes", fmt.Sprint(int64(64)<<30))
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	doomedSrv.Process.Kill()
	doomedSrv.Wait()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a 64 GiB upload finished although its server was killed")
		}
		if !strings.Contains(err.Error(), "exit") {
			t.Logf("client ended with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the client still runs 30 s after its server was killed")
	}
}

// A connection in the kernel does not outlive its agent: after a SIGKILL
// the agent's sockets close, sockops switches both directions back to
// them, and an upload that was going app to app fails at once instead of
// going on with no agent, policy or metrics.
func TestPrivilegedShortcutEndsWithItsAgent(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: sc-sink\nport: 7410\nprotocol: tcp\n")
	client, sink := m.n1.MustAddPod(t, "client"), m.n1.MustAddPod(t, "sink")
	startServer(t, sink, 7410, testApp, "bulk-server", "--addr", ":7410")
	m.a1.enroll(client, "client")
	m.a1.enroll(sink, "sc-sink", 7410)
	waitFor(t, 15*time.Second, "sc-sink healthy", func() bool { return m.control.healthyInstances("sc-sink") == 1 })
	waitFor(t, 10*time.Second, "a first upload", func() bool {
		_, err := m.inPod(t, client, testApp, "bulk", "--addr", "sc-sink.svc:7410", "--dir", "up", "--bytes", "1000")
		return err == nil
	})
	// 1 TiB: minutes at this machine's rate, if nothing stops it. The
	// client pauses after its header, so the relay catches up there (a
	// sender that never pauses may stay relayed, which proves nothing
	// here); should it not, a new upload, up to 3.
	var upload *exec.Cmd
	var stderr bytes.Buffer
	for attempt := 1; upload == nil; attempt++ {
		if attempt > 3 {
			t.Fatal("3 uploads in a row never moved into the kernel")
		}
		before := m.a1.counters()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stderr.Reset()
		cmd := client.Command(ctx, "unshare", "-m", "sh", "-c", "mount --bind "+m.resolv+" /etc/resolv.conf && exec "+testApp+
			" bulk --addr sc-sink.svc:7410 --dir up --pause 100ms --bytes "+fmt.Sprint(int64(1)<<40))
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && upload == nil {
			if c := m.a1.counters(); c["msg_shortcut"] > before["msg_shortcut"]+100 {
				upload = cmd
			}
			time.Sleep(100 * time.Millisecond)
		}
		if upload == nil {
			t.Logf("upload %d stayed relayed; another", attempt)
			cancel()
			cmd.Wait()
		}
	}
	done := make(chan error, 1)
	go func() { done <- upload.Wait() }()
	killed := time.Now()
	m.a1.kill()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a 1 TiB upload finished")
		}
		t.Logf("the upload failed %s after the agent was killed: %v: %s", time.Since(killed).Round(time.Millisecond), err, stderr.String())
		// Switched back, the next write meets the dead agent's socket.
		// Left in the kernel, writes go on into a server that has seen
		// its end, until its queue exhausts memory (ENOMEM, measured).
		if msg := stderr.String(); !strings.Contains(msg, "broken pipe") && !strings.Contains(msg, "connection reset by peer") {
			t.Fatalf("the upload did not end at the dead agent's socket: %v: %s", err, msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upload still runs 10 s after its agent was killed: the connection goes on without it")
	}
}
