package registry

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hms-node/hms-node/pkg/api"
)

// fakeControl is a tiny Agents server on a loopback socket. Each stream
// becomes a session the test drives: what it sends, and when it drops.
type fakeControl struct {
	api.UnimplementedAgentsServer
	sessions chan *session
}

type session struct {
	hello      *api.Hello
	out        chan *api.ControlMessage
	drop       chan struct{}
	updates    chan *api.InstanceUpdate
	heartbeats chan time.Time
	other      chan *api.AgentMessage // tap replies, stats
}

func (f *fakeControl) Connect(stream api.Agents_ConnectServer) error {
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	if m.GetHello() == nil {
		return errors.New("first message is not a hello")
	}
	s := &session{hello: m.GetHello(), out: make(chan *api.ControlMessage), drop: make(chan struct{}),
		updates: make(chan *api.InstanceUpdate, 16), heartbeats: make(chan time.Time, 64),
		other: make(chan *api.AgentMessage, 64)}
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			switch x := m.Msg.(type) {
			case *api.AgentMessage_Instance:
				s.updates <- x.Instance
			case *api.AgentMessage_Heartbeat:
				select {
				case s.heartbeats <- time.Now():
				default:
				}
			default:
				select {
				case s.other <- m:
				default:
				}
			}
		}
	}()
	f.sessions <- s
	for {
		select {
		case m := <-s.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-s.drop:
			return errors.New("dropped by the test")
		case <-stream.Context().Done():
			return nil
		}
	}
}

// startControl serves a fakeControl on 127.0.0.1 and dials it.
func startControl(t *testing.T) (*fakeControl, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeControl{sessions: make(chan *session, 4)}
	srv := grpc.NewServer()
	api.RegisterAgentsServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return f, conn
}

// runClient starts c.Run and stops it at cleanup.
func runClient(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

func nextSession(t *testing.T, f *fakeControl) *session {
	t.Helper()
	select {
	case s := <-f.sessions:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no stream from the client")
		return nil
	}
}

func (s *session) send(t *testing.T, m *api.ControlMessage) {
	t.Helper()
	select {
	case s.out <- m:
	case <-time.After(5 * time.Second):
		t.Fatal("stream stuck")
	}
}

func snapshotMsg(s *api.Snapshot) *api.ControlMessage {
	return &api.ControlMessage{Msg: &api.ControlMessage_Snapshot{Snapshot: s}}
}

func deltaMsg(d *api.Delta) *api.ControlMessage {
	return &api.ControlMessage{Msg: &api.ControlMessage_Delta{Delta: d}}
}

// waitRevision waits for the OnChange that brings the table to rev.
func waitRevision(t *testing.T, tb *Table, changed <-chan struct{}, rev int64) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for tb.Revision() != rev {
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("revision %d, want %d", tb.Revision(), rev)
		}
	}
}

func newClient(conn *grpc.ClientConn, insts func() []*api.Instance) (*Client, chan struct{}) {
	changed := make(chan struct{}, 64)
	return &Client{
		Conn: conn, Node: &api.Node{Name: "n1"}, Table: NewTable(), Instances: insts,
		OnChange: func() { changed <- struct{}{} },
	}, changed
}

func TestClientReconnectsAndResumes(t *testing.T) {
	f, conn := startControl(t)
	local := inst("", "web", "n1", "10.0.0.1", 8080, true)
	c, changed := newClient(conn, func() []*api.Instance { return []*api.Instance{local} })
	runClient(t, c)

	s1 := nextSession(t, f)
	if s1.hello.ResumeRevision != 0 || s1.hello.Node.GetName() != "n1" || len(s1.hello.Instances) != 1 {
		t.Fatalf("first hello: %v", s1.hello)
	}
	s1.send(t, snapshotMsg(&api.Snapshot{Revision: 7, Services: []*api.Service{svc("", "web", "240.240.0.1", "http", 8080)},
		Instances: []*api.Instance{local}}))
	s1.send(t, deltaMsg(&api.Delta{Revision: 9, Changes: []*api.Change{
		change("/hms/v1/services/default/api", svc("", "api", "240.240.0.2", "tcp", 9000))}}))
	waitRevision(t, c.Table, changed, 9)
	if st := c.State(); !st.Connected || st.Revision != 9 || st.LastSync.IsZero() {
		t.Fatalf("state: %+v", st)
	}

	close(s1.drop)
	// While the client is away, the table keeps answering.
	deadline := time.Now().Add(5 * time.Second)
	for c.State().Connected {
		if time.Now().After(deadline) {
			t.Fatal("client did not notice the drop")
		}
		time.Sleep(time.Millisecond)
	}
	if st := c.State(); st.LastError == "" {
		t.Fatalf("no error recorded: %+v", st)
	}
	wantVIP(t, c.Table, "240.240.0.1:80", "web", 8080)
	wantVIP(t, c.Table, "240.240.0.2:9000", "api", 9000)
	if _, _, _, ok := c.Table.Pick(svc("", "web", "", "", 0)); !ok {
		t.Fatal("no pick while disconnected")
	}

	s2 := nextSession(t, f)
	if s2.hello.ResumeRevision != 9 {
		t.Fatalf("resume_revision = %d, want 9", s2.hello.ResumeRevision)
	}
	// A replayed delta is ignored; a newer one applies.
	s2.send(t, deltaMsg(&api.Delta{Revision: 9, Changes: []*api.Change{change("/hms/v1/services/default/api", nil)}}))
	s2.send(t, deltaMsg(&api.Delta{Revision: 10, Changes: []*api.Change{change("/hms/v1/services/default/web", nil)}}))
	waitRevision(t, c.Table, changed, 10)
	wantVIP(t, c.Table, "240.240.0.2:9000", "api", 9000)
	wantVIP(t, c.Table, "240.240.0.1:80", "", 0)
	if !c.State().Connected {
		t.Fatal("not connected after resume")
	}
}

func TestClientReport(t *testing.T) {
	f, conn := startControl(t)
	var mu sync.Mutex
	current := []*api.Instance{}
	c, changed := newClient(conn, func() []*api.Instance {
		mu.Lock()
		defer mu.Unlock()
		return append([]*api.Instance(nil), current...)
	})
	runClient(t, c)
	s1 := nextSession(t, f)
	s1.send(t, snapshotMsg(&api.Snapshot{Revision: 1}))
	waitRevision(t, c.Table, changed, 1)

	c.Report(inst("", "web", "n1", "10.0.0.1", 8080, true), false)
	select {
	case u := <-s1.updates:
		if u.Removed || u.Instance.Ip != "10.0.0.1" || !u.Instance.Healthy {
			t.Fatalf("update: %v", u)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("report did not reach the server")
	}
	c.Report(inst("", "web", "n1", "10.0.0.1", 8080, true), true)
	if u := <-s1.updates; !u.Removed {
		t.Fatalf("removal: %v", u)
	}

	// Disconnected: the change rides in the next Hello via Instances().
	close(s1.drop)
	mu.Lock()
	current = append(current, inst("", "web", "n1", "10.0.0.5", 8080, false))
	mu.Unlock()
	s2 := nextSession(t, f)
	if len(s2.hello.Instances) != 1 || s2.hello.Instances[0].Ip != "10.0.0.5" {
		t.Fatalf("hello instances: %v", s2.hello.Instances)
	}
}

func TestClientHeartbeatInterval(t *testing.T) {
	f, conn := startControl(t)
	c, changed := newClient(conn, nil)
	runClient(t, c)
	s := nextSession(t, f)
	const every = 100 * time.Millisecond
	s.send(t, snapshotMsg(&api.Snapshot{Revision: 1, HeartbeatMs: every.Milliseconds()}))
	waitRevision(t, c.Table, changed, 1)
	var beats []time.Time
	for len(beats) < 6 {
		select {
		case at := <-s.heartbeats:
			beats = append(beats, at)
		case <-time.After(2 * time.Second):
			t.Fatalf("only %d heartbeats", len(beats))
		}
	}
	avg := beats[len(beats)-1].Sub(beats[0]) / time.Duration(len(beats)-1)
	t.Logf("heartbeat every %v (announced %v)", avg, every)
	if avg < every*8/10 || avg > every*15/10 {
		t.Fatalf("heartbeat every %v, want about %v", avg, every)
	}
}
