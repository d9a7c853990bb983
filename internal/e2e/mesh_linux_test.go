package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// twoNodes is a control plane and two simulated nodes with an agent each.
type twoNodes struct {
	control *controlProc
	n1, n2  *testbed.Node
	a1, a2  *agentProc
	resolv  string // a resolv.conf naming a resolver the pods cannot reach
}

func newTwoNodes(t *testing.T) *twoNodes {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	m := &twoNodes{control: newControl(t), n1: bed.MustAddNode(t, "n1"), n2: bed.MustAddNode(t, "n2")}
	upstream := startFakeUpstream(t)
	flags := []string{"--probe-interval", "500ms", "--dns-upstream", upstream}
	m.a1 = newAgent(t, m.n1, append(m.control.agentFlags(), flags...)...)
	m.a2 = newAgent(t, m.n2, append(m.control.agentFlags(), flags...)...)
	m.a1.start()
	m.a2.start()
	m.resolv = filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(m.resolv, []byte("nameserver 192.0.2.53\noptions attempts:1 timeout:2\n"), 0o644)
	return m
}

// curlByName runs an unmodified curl in the pod, resolving through the
// pod's usual resolver path (its port 53 traffic goes to the agent).
func (m *twoNodes) curlByName(t *testing.T, p *testbed.Pod, url string) (string, error) {
	return run(t, p, "unshare", "-m", "sh", "-c",
		"mount --bind "+m.resolv+" /etc/resolv.conf && exec curl -sS --max-time 5 "+url)
}

const notifyManifest = `service: {name: notify-svc, port: 7000}
protocol: http
health: {path: /healthz, interval: 1s}
`

func TestPrivilegedCallByNameAcrossNodes(t *testing.T) {
	m := newTwoNodes(t)
	out := m.control.apply(notifyManifest)
	mustContain(t, out, `✓ Service "notify-svc" registered (VIP 240.240.`)
	mustContain(t, out, "ports 7000, 80)")

	client := m.n1.MustAddPod(t, "client")
	notify := m.n2.MustAddPod(t, "notify")
	startServer(t, notify, 7000, testApp, "http", "--addr", ":7000", "--body", "notify-on-n2")
	m.a1.enroll(client, "client")
	m.a2.enroll(notify, "notify-svc", 7000)
	waitFor(t, 10*time.Second, "notify-svc healthy in list", func() bool { return m.control.healthyInstances("notify-svc") == 1 })

	for _, url := range []string{"http://notify-svc.svc/sms", "http://notify-svc.default.svc:7000/sms", "http://notify-svc.mesh/sms"} {
		var out string
		var err error
		// The agent of n1 may see the instance a moment after list does.
		waitFor(t, 5*time.Second, "a call by name to succeed", func() bool {
			out, err = m.curlByName(t, client, url)
			return err == nil
		})
		mustContain(t, out, "notify-on-n2 path=/sms")
	}
	st, _ := m.a1.status()
	if st.Registry == nil || !st.Registry.Connected {
		t.Fatalf("agent 1 registry state: %+v", st.Registry)
	}
	// A mesh name that does not exist is NXDOMAIN, not forwarded.
	if out, err := m.curlByName(t, client, "http://nope-svc.svc/"); err == nil || !strings.Contains(out, "resolve") {
		t.Fatalf("unknown mesh name: err=%v out=%q", err, out)
	}
}

// With instances on two nodes, killing one moves all traffic to the other
// with no failed request once its probe failed; the dead instance leaves
// load balancing.
func TestPrivilegedFailoverAcrossNodes(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply(notifyManifest)
	client := m.n1.MustAddPod(t, "client")
	p1, p2 := m.n1.MustAddPod(t, "notify-a"), m.n2.MustAddPod(t, "notify-b")
	startServer(t, p1, 7000, testApp, "http", "--addr", ":7000", "--body", "notify-a")
	cmdB, err := p2.Start(ctxT(t, 5*time.Minute), testApp, "http", "--addr", ":7000", "--body", "notify-b")
	if err != nil {
		t.Fatal(err)
	}
	m.a1.enroll(client, "client")
	m.a1.enroll(p1, "notify-svc", 7000)
	m.a2.enroll(p2, "notify-svc", 7000)
	waitFor(t, 10*time.Second, "two healthy instances", func() bool { return m.control.healthyInstances("notify-svc") == 2 })

	seen := map[string]int{}
	waitFor(t, 10*time.Second, "both instances to answer", func() bool {
		out, err := m.curlByName(t, client, "http://notify-svc.svc/x")
		if err == nil {
			seen[strings.Fields(out)[0]]++
		}
		return seen["notify-a"] > 0 && seen["notify-b"] > 0
	})

	cmdB.Process.Signal(syscall.SIGKILL)
	cmdB.Wait()
	// One health interval (1 s) plus propagation, then every call lands on a.
	waitFor(t, 10*time.Second, "the dead instance to be unhealthy", func() bool { return m.control.healthyInstances("notify-svc") == 1 })
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < 30; i++ {
		out, err := m.curlByName(t, client, "http://notify-svc.svc/x")
		if err != nil {
			t.Fatalf("call %d after failover: %v\n%s", i, err, out)
		}
		mustContain(t, out, "notify-a")
	}
}

// A killed agent's instances vanish from list within 3 heartbeats; a
// restarted control plane keeps the registry and the agents resume.
func TestPrivilegedAgentDeathAndControlRestart(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply(notifyManifest)
	notify := m.n2.MustAddPod(t, "notify")
	startServer(t, notify, 7000, testApp, "http", "--addr", ":7000", "--body", "notify-on-n2")
	m.a2.enroll(notify, "notify-svc", 7000)
	client := m.n1.MustAddPod(t, "client")
	m.a1.enroll(client, "client")
	waitFor(t, 10*time.Second, "notify-svc healthy", func() bool { return m.control.healthyInstances("notify-svc") == 1 })

	// A long-lived connection through both agents survives a control-plane
	// restart.
	m.control.apply("name: echo\nport: 7100\nprotocol: tcp\n")
	echo := m.n2.MustAddPod(t, "echo")
	startServer(t, echo, 7100, testApp, "echo", "--addr", ":7100")
	m.a2.enroll(echo, "echo", 7100)
	waitFor(t, 10*time.Second, "echo healthy", func() bool { return m.control.healthyInstances("echo") == 1 })
	long := client.Command(ctxT(t, 2*time.Minute), testApp, "rr", "--addr", fmt.Sprintf("%s:7100", echo.IP), "--n", "300", "--pause", "10ms")
	var longOut strings.Builder
	long.Stdout = &longOut
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	_, before := m.control.list()
	m.control.stop()
	waitFor(t, 5*time.Second, "agent 1 to report the control plane gone", func() bool {
		st, err := m.a1.status()
		return err == nil && st.Registry != nil && !st.Registry.Connected && strings.Contains(st.Control, "last known state")
	})
	if out, err := m.curlByName(t, client, "http://notify-svc.svc/x"); err != nil {
		t.Fatalf("call by name with the control plane down: %v\n%s", err, out)
	}
	m.control.start()
	waitFor(t, 10*time.Second, "agents to resume", func() bool {
		st1, e1 := m.a1.status()
		st2, e2 := m.a2.status()
		return e1 == nil && e2 == nil && st1.Registry.Connected && st2.Registry.Connected
	})
	if err := long.Wait(); err != nil || !strings.Contains(longOut.String(), `"count":300`) {
		t.Fatalf("long-lived connection across the control-plane restart: %v %s", err, longOut.String())
	}
	waitFor(t, 10*time.Second, "list unchanged after the restart", func() bool {
		_, after := m.control.list()
		return after == before
	})

	m.a2.kill()
	start := time.Now()
	waitFor(t, 3*heartbeat+2*time.Second, "the dead agent's instances to vanish", func() bool {
		l, _ := m.control.list()
		for _, s := range l.Services {
			if len(s.Instances) > 0 {
				return false
			}
		}
		return true
	})
	t.Logf("instances of the killed agent vanished after %s (heartbeat %s)", time.Since(start).Round(10*time.Millisecond), heartbeat)
}
