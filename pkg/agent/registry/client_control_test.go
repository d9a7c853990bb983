package registry

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

func tapMsg(id string) *api.ControlMessage {
	return &api.ControlMessage{Msg: &api.ControlMessage_Tap{Tap: &api.TapRequest{Id: id, Service: "web"}}}
}

// OnControl gets what the client does not handle itself, with a context
// that ends with its stream; Send answers on the current stream; both work
// again after a reconnect.
func TestClientControlHookAndSendSurviveReconnect(t *testing.T) {
	f, conn := startControl(t)
	type got struct {
		ctx context.Context
		m   *api.ControlMessage
	}
	hooked := make(chan got, 4)
	c, changed := newClient(conn, nil)
	c.OnControl = func(ctx context.Context, m *api.ControlMessage) { hooked <- got{ctx, m} }
	if err := c.Send(context.Background(), &api.AgentMessage{}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("send before any stream: %v, want ErrNotConnected", err)
	}
	runClient(t, c)

	for i, id := range []string{"first", "second"} {
		s := nextSession(t, f)
		s.send(t, snapshotMsg(&api.Snapshot{Revision: int64(i + 1)}))
		waitRevision(t, c.Table, changed, int64(i+1))
		synced := c.State().LastSync
		s.send(t, tapMsg(id))
		var h got
		select {
		case h = <-hooked:
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d: tap request not handed to OnControl", i+1)
		}
		if h.m.GetTap().GetId() != id || h.ctx.Err() != nil {
			t.Fatalf("stream %d: hook got %v (ctx err %v)", i+1, h.m, h.ctx.Err())
		}
		if c.State().LastSync != synced {
			t.Fatalf("stream %d: a tap request counted as a registry sync", i+1)
		}
		reply := &api.AgentMessage{Msg: &api.AgentMessage_Tap{Tap: &api.TapReply{Id: id, Done: true}}}
		if err := c.Send(context.Background(), reply); err != nil {
			t.Fatalf("stream %d: send: %v", i+1, err)
		}
		select {
		case m := <-s.other:
			if m.GetTap().GetId() != id {
				t.Fatalf("stream %d: server got %v", i+1, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d: reply did not reach the server", i+1)
		}
		close(s.drop)
		select {
		case <-h.ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d: the hook's context outlived its stream", i+1)
		}
	}
}
