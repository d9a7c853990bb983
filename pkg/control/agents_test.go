package control

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testAgent is an agent's stream: it heartbeats every 100ms and collects
// what the control plane sends.
type testAgent struct {
	t      *testing.T
	mu     sync.Mutex // serializes Send
	stream api.Agents_ConnectClient
	msgs   chan *api.ControlMessage
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before msgs is closed
}

func connectAgent(t *testing.T, agents api.AgentsClient, hello *api.Hello) *testAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := agents.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &testAgent{t: t, stream: stream, msgs: make(chan *api.ControlMessage, 10000), cancel: cancel, done: make(chan struct{})}
	t.Cleanup(a.stop)
	a.send(&api.AgentMessage{Msg: &api.AgentMessage_Hello{Hello: hello}})
	go func() {
		defer close(a.msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				a.err = err
				return
			}
			a.msgs <- m
		}
	}()
	go func() {
		defer close(a.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				a.send(&api.AgentMessage{Msg: &api.AgentMessage_Heartbeat{Heartbeat: &api.Heartbeat{}}})
			}
		}
	}()
	return a
}

func (a *testAgent) send(m *api.AgentMessage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stream.Send(m) // errors surface on Recv
}

// stop cancels the stream, as a dying agent's connection would end.
func (a *testAgent) stop() {
	a.cancel()
	<-a.done
}

// next returns the next message within d.
func (a *testAgent) next(d time.Duration) *api.ControlMessage {
	a.t.Helper()
	select {
	case m, ok := <-a.msgs:
		if !ok {
			a.t.Fatalf("agent stream ended: %v", a.err)
		}
		return m
	case <-time.After(d):
		a.t.Fatalf("no message from the control plane within %s", d)
	}
	return nil
}

// waitDelta returns the first delta within d for which match holds.
func (a *testAgent) waitDelta(d time.Duration, match func(*api.Delta) bool) *api.Delta {
	a.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := a.next(time.Until(deadline))
		if m.GetSnapshot() != nil {
			a.t.Fatalf("unexpected snapshot at revision %d", m.GetSnapshot().Revision)
		}
		if match(m.GetDelta()) {
			return m.GetDelta()
		}
	}
}

func hasService(name string) func(*api.Delta) bool {
	return func(d *api.Delta) bool {
		for _, c := range d.Changes {
			if c.GetService().GetName() == name && !c.Deleted {
				return true
			}
		}
		return false
	}
}

func inst(svc, workload, ip string) *api.Instance {
	return &api.Instance{Service: svc, Workload: workload, Ip: ip, Port: 8080, Healthy: true}
}

func hello(node string, resume int64, ins ...*api.Instance) *api.Hello {
	return &api.Hello{Node: &api.Node{Name: node, Address: "10.0.0.1"}, ResumeRevision: resume, Instances: ins}
}

func instanceCount(t *testing.T, reg api.RegistryClient, node string) int {
	n := 0
	for _, in := range list(t, reg).Instances {
		if in.Node == node {
			n++
		}
	}
	return n
}

func TestAgentSnapshotThenDelta(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	agents := nodeAgents(t, s, "n1")
	apply(t, reg, svc("web", 80))

	a := connectAgent(t, agents, hello("n1", 0, inst("web", "pod-1", "10.1.0.1")))
	snap := a.next(5 * time.Second).GetSnapshot()
	if snap == nil || snap.HeartbeatMs != 300 || len(snap.Services) != 1 || snap.Services[0].Vip == "" {
		t.Fatalf("first message %v, want a snapshot with web and heartbeat_ms 300", snap)
	}
	if len(snap.Instances) != 1 || snap.Instances[0].Node != "n1" || snap.Instances[0].Namespace != "default" {
		t.Fatalf("snapshot instances %v", snap.Instances)
	}
	start := time.Now()
	r := apply(t, reg, svc("api", 80))
	d := a.waitDelta(time.Second, hasService("api"))
	if took := time.Since(start); took > time.Second || d.Revision != r.Results[0].Service.Revision || d.Revision <= snap.Revision {
		t.Fatalf("delta at %d after %s; apply at %d, snapshot at %d", d.Revision, took, r.Results[0].Service.Revision, snap.Revision)
	}
	// An instance update arrives as a delta too, and a removal as a deletion.
	a.send(&api.AgentMessage{Msg: &api.AgentMessage_Instance{Instance: &api.InstanceUpdate{Instance: inst("api", "pod-2", "10.1.0.2")}}})
	a.waitDelta(time.Second, func(d *api.Delta) bool {
		return len(d.Changes) == 1 && d.Changes[0].GetInstance().GetService() == "api"
	})
	a.send(&api.AgentMessage{Msg: &api.AgentMessage_Instance{Instance: &api.InstanceUpdate{Instance: inst("api", "pod-2", "10.1.0.2"), Removed: true}}})
	a.waitDelta(time.Second, func(d *api.Delta) bool {
		return len(d.Changes) == 1 && d.Changes[0].Deleted && d.Changes[0].GetInstance().GetIp() == "10.1.0.2"
	})
}

func TestAgentFirstMessageMustBeHello(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	agents := nodeAgents(t, s, "n1")
	stream, err := agents.Connect(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&api.AgentMessage{Msg: &api.AgentMessage_Heartbeat{Heartbeat: &api.Heartbeat{}}})
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("recv after a heartbeat first: %v, want InvalidArgument", err)
	}
	stream, err = agents.Connect(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&api.AgentMessage{Msg: &api.AgentMessage_Hello{Hello: &api.Hello{}}})
	if _, err := stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("recv after a hello without a node: %v, want InvalidArgument", err)
	}
}

func TestAgentInstancesVanishAfterStreamEnds(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	agents := nodeAgents(t, s, "n1")
	a := connectAgent(t, agents, hello("n1", 0, inst("web", "pod-1", "10.1.0.1"), inst("web", "pod-2", "10.1.0.2")))
	a.next(5 * time.Second)
	if n := instanceCount(t, reg, "n1"); n != 2 {
		t.Fatalf("%d instances listed, want 2", n)
	}
	if l := list(t, reg); len(l.Nodes) != 1 || l.Nodes[0].Name != "n1" {
		t.Fatalf("nodes %v", l.Nodes)
	}
	time.Sleep(350 * time.Millisecond) // several heartbeats keep it alive
	a.stop()
	stopped := time.Now()
	time.Sleep(200 * time.Millisecond)
	if n := instanceCount(t, reg, "n1"); n != 2 {
		t.Fatalf("instances gone %s after the stream ended (%d left); the lease must not be revoked at once",
			time.Since(stopped), n)
	}
	eventually(t, 3*300*time.Millisecond+300*time.Millisecond, "instances of a dead agent vanish", func() bool {
		return instanceCount(t, reg, "n1") == 0
	})
	t.Logf("instances vanished %s after the stream ended", time.Since(stopped))
	if l := list(t, reg); len(l.Nodes) != 0 {
		t.Fatalf("node still registered: %v", l.Nodes)
	}
}

func TestAgentOverlappingStreamsKeepInstances(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	agents := nodeAgents(t, s, "n1")
	ins := []*api.Instance{inst("web", "pod-1", "10.1.0.1"), inst("web", "pod-2", "10.1.0.2")}
	old := connectAgent(t, agents, hello("n1", 0, ins...))
	old.next(5 * time.Second)
	upgraded := connectAgent(t, agents, hello("n1", 0, ins...))
	upgraded.next(5 * time.Second)
	old.stop()
	// Past 3 heartbeats and etcd's minimum lease TTL (2s): still there.
	time.Sleep(2500 * time.Millisecond)
	if n := instanceCount(t, reg, "n1"); n != 2 {
		t.Fatalf("%d instances after the old stream ended, want 2", n)
	}
	upgraded.stop()
	eventually(t, 1500*time.Millisecond, "instances vanish once the last stream ends", func() bool {
		return instanceCount(t, reg, "n1") == 0
	})
}

func TestAgentResumeAfterRestart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, stop := startServer(t, cfg)
	reg, _ := dial(t, s)
	n1 := joinNode(t, s, "n1")
	a := connectAgent(t, n1.agents, hello("n1", 0))
	if a.next(5*time.Second).GetSnapshot() == nil {
		t.Fatal("first message is not a snapshot")
	}
	apply(t, reg, svc("one", 80))
	seen := a.waitDelta(time.Second, hasService("one")).Revision
	a.stop()
	stop()

	// The agent comes back with the node certificate it already has (a
	// second Join of a connected node's name is refused).
	s2, _ := startServer(t, cfg)
	reg2, _ := dial(t, s2)
	agents2 := nodeWithCert(t, s2, "n1", n1.bundle, n1.cert).agents
	newer := apply(t, reg2, svc("two", 80)).Results[0].Service.Revision
	b := connectAgent(t, agents2, hello("n1", seen))
	var got []int64
	d := b.waitDelta(2*time.Second, func(d *api.Delta) bool {
		got = append(got, d.Revision)
		if d.Revision <= seen || hasService("one")(d) {
			t.Fatalf("resumed from %d but got delta %d again: %v", seen, d.Revision, d)
		}
		return hasService("two")(d)
	})
	if d.Revision != newer {
		t.Fatalf("delta for two at %d, applied at %d", d.Revision, newer)
	}
	t.Logf("resumed from %d: deltas %v, no snapshot", seen, got)

	// A revision this etcd never had (another cluster's) gets a snapshot.
	c := connectAgent(t, nodeAgents(t, s2, "n2"), hello("n2", newer+1000000))
	if snap := c.next(5 * time.Second).GetSnapshot(); snap == nil || len(snap.Services) != 2 {
		t.Fatalf("resume from a future revision: %v, want a snapshot of 2 services", snap)
	}
}
