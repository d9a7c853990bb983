package agent

import (
	"context"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// Tap and stats (issue 5): the proxy hands every call to a.tap and
// a.stats; the control plane asks for a service's calls over the registry
// stream (ControlMessage.tap), and gets the stats every statsWindow.
const (
	// tapPerWorkload is the ring size of each local workload and service.
	tapPerWorkload = 512
	// statsWindow is how often the agent sends its Stats (the control plane
	// counts a node stale after 3 windows without).
	statsWindow = 5 * time.Second
	// maxTapSessions bounds the tap requests one agent answers at once.
	maxTapSessions = 32
	// A following tap sends its live calls in batches of up to tapBatch,
	// at least every tapFlush.
	tapBatch = 64
	tapFlush = 100 * time.Millisecond
)

// tapSessions are the tap requests being answered, by id; the zero value
// is ready.
type tapSessions struct {
	// mu guards the fields below.
	mu   sync.Mutex
	byID map[string]*tapSession
}

type tapSession struct{ cancel context.CancelFunc }

// add registers a session; false when the id is taken or too many run.
func (t *tapSessions) add(id string, s *tapSession) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID == nil {
		t.byID = map[string]*tapSession{}
	}
	if _, dup := t.byID[id]; dup || len(t.byID) >= maxTapSessions {
		return false
	}
	t.byID[id] = s
	return true
}

func (t *tapSessions) remove(id string, s *tapSession) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[id] == s {
		delete(t.byID, id)
	}
}

func (t *tapSessions) cancel(id string) {
	t.mu.Lock()
	s := t.byID[id]
	t.mu.Unlock()
	if s != nil {
		s.cancel()
	}
}

// onControl is the registry client's hook for the control messages it
// does not handle itself. ctx ends with the stream that carried m.
func (a *Agent) onControl(ctx context.Context, m *api.ControlMessage) {
	switch x := m.GetMsg().(type) {
	case *api.ControlMessage_Tap:
		a.startTap(ctx, x.Tap)
	case *api.ControlMessage_TapCancel:
		a.taps.cancel(x.TapCancel.GetId())
	}
}

// startTap answers one TapRequest on its own goroutine, until it is done,
// canceled, or its stream ends.
func (a *Agent) startTap(ctx context.Context, req *api.TapRequest) {
	id := req.GetId()
	if id == "" || req.GetService() == "" {
		return
	}
	tctx, cancel := context.WithCancel(ctx)
	s := &tapSession{cancel: cancel}
	if !a.taps.add(id, s) {
		cancel()
		a.log.Warn("tap refused: too many at once", "id", id, "service", req.GetService(), "max", maxTapSessions)
		go a.sendTap(ctx, &api.TapReply{Id: id, Done: true})
		return
	}
	go func() {
		defer a.taps.remove(id, s)
		defer cancel()
		a.serveTap(tctx, req)
	}()
}

// serveTap sends the recent calls of the service at once, then, when
// following, its live calls in batches.
func (a *Agent) serveTap(ctx context.Context, req *api.TapRequest) {
	ns, svc := req.GetNamespace(), req.GetService()
	var live <-chan *api.Call
	if req.GetFollow() {
		live = a.tap.Follow(ctx, ns, svc) // before Recent: no call falls between
	}
	recent := a.tap.Recent(ns, svc, int(min(req.GetLast(), tapPerWorkload)))
	if !a.sendTap(ctx, &api.TapReply{Id: req.GetId(), Calls: recent, Done: live == nil}) || live == nil {
		return
	}
	// A call recorded between Follow and Recent is in both.
	inRecent := make(map[*api.Call]bool, len(recent))
	for _, c := range recent {
		inRecent[c] = true
	}
	tick := time.NewTicker(tapFlush)
	defer tick.Stop()
	var batch []*api.Call
	flush := func() bool {
		inRecent = nil // later calls are all new
		if len(batch) == 0 {
			return true
		}
		ok := a.sendTap(ctx, &api.TapReply{Id: req.GetId(), Calls: batch})
		batch = nil
		return ok
	}
	for {
		select {
		case c, ok := <-live:
			if !ok {
				return
			}
			if inRecent[c] {
				continue
			}
			if batch = append(batch, c); len(batch) >= tapBatch && !flush() {
				return
			}
		case <-tick.C:
			if !flush() {
				return
			}
		}
	}
}

// sendTap sends a reply on the registry stream; false when it cannot.
func (a *Agent) sendTap(ctx context.Context, r *api.TapReply) bool {
	if a.client == nil {
		return false
	}
	err := a.client.Send(ctx, &api.AgentMessage{Msg: &api.AgentMessage_Tap{Tap: r}})
	if err != nil && ctx.Err() == nil {
		a.log.Debug("tap reply not sent", "id", r.Id, "error", err)
	}
	return err == nil
}

// sendStats sends the stats of each window to the control plane until
// ctx ends. A window that finds the stream down is dropped: the control
// plane shows the latest window of each node, not a history.
func (a *Agent) sendStats(ctx context.Context) {
	tick := time.NewTicker(statsWindow)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			st := a.stats.Take(now.Sub(last))
			last = now
			if a.circuitStatus != nil {
				st.Circuits = a.circuitStatus()
			}
			st.Certs = a.certStatus()
			sctx, cancel := context.WithTimeout(ctx, statsWindow)
			err := a.client.Send(sctx, &api.AgentMessage{Msg: &api.AgentMessage_Stats{Stats: st}})
			cancel()
			if err != nil && ctx.Err() == nil {
				a.log.Debug("stats not sent", "error", err)
			}
		}
	}
}

// certStatus lists the expiry of each workload identity of this node, and
// of the node's own certificate (the same list the metrics export).
func (a *Agent) certStatus() []*api.CertStatus {
	certs := a.certificates()
	out := make([]*api.CertStatus, 0, len(certs))
	for _, c := range certs {
		out = append(out, &api.CertStatus{Identity: c.Identity, ExpiryUnix: c.NotAfter.Unix()})
	}
	return out
}
