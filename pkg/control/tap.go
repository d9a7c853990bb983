package control

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The tap relay: a Tap asks every agent stream of this replica for the
// calls of one service (ControlMessage.tap), merges the recent parts of
// the answers in time order and, when following, passes on the live calls
// until the caller goes, then tells the agents (tap_cancel). A replica
// sees only the agents connected to it.
const (
	// tapRecentWait bounds the wait for the agents' recent parts: an agent
	// that has not answered by then is left out.
	tapRecentWait = 2 * time.Second
	// maxTapLast bounds the recent calls one Tap returns.
	maxTapLast = 10000
	// tapEvents is how many agent replies a Tap may fall behind before
	// further ones are dropped (a slow caller loses live calls, it never
	// holds an agent stream back).
	tapEvents = 256
	// tapHold is how long a live destination report waits for the source
	// report of the same call (see liveDedup).
	tapHold = time.Second
	// agentOutbox is how many control messages (tap requests, cancels) may
	// wait for an agent stream; beyond it they are dropped.
	agentOutbox = 64
)

// tapRelay tracks this replica's agent streams and its running taps.
type tapRelay struct {
	log     *slog.Logger
	closing chan struct{} // closed when the replica shuts down

	// mu guards the fields below.
	mu       sync.Mutex
	streams  map[*agentStream]struct{}
	sessions map[string]*tapRun
	closed   bool
}

// tapRun is one running Tap.
type tapRun struct {
	req    *api.TapRequest // with its id
	events chan tapEvent
	asked  map[*agentStream]bool // guarded by tapRelay.mu
}

// tapEvent is an agent's reply, or (reply nil) the end of its stream.
type tapEvent struct {
	from  *agentStream
	reply *api.TapReply
}

func newTapRelay(log *slog.Logger) *tapRelay {
	return &tapRelay{log: log, closing: make(chan struct{}),
		streams: map[*agentStream]struct{}{}, sessions: map[string]*tapRun{}}
}

// close ends every running tap (the replica is shutting down).
func (t *tapRelay) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		close(t.closing)
	}
}

// offer queues m for the stream without waiting; false when it is full.
func (as *agentStream) offer(m *api.ControlMessage) bool {
	select {
	case as.out <- m:
		return true
	default:
		return false
	}
}

func tapMsg(req *api.TapRequest) *api.ControlMessage {
	return &api.ControlMessage{Msg: &api.ControlMessage_Tap{Tap: req}}
}

func cancelMsg(id string) *api.ControlMessage {
	return &api.ControlMessage{Msg: &api.ControlMessage_TapCancel{TapCancel: &api.TapCancel{Id: id}}}
}

// attach adds a synced stream; following taps ask it for live calls.
func (t *tapRelay) attach(as *agentStream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[as] = struct{}{}
	for _, run := range t.sessions {
		if run.req.GetFollow() {
			live := proto.Clone(run.req).(*api.TapRequest)
			live.Last = 0
			if as.offer(tapMsg(live)) {
				run.asked[as] = true
			}
		}
	}
}

// detach removes a stream that ended; taps waiting for it stop waiting.
func (t *tapRelay) detach(as *agentStream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.streams, as)
	for _, run := range t.sessions {
		if run.asked[as] {
			delete(run.asked, as)
			select {
			case run.events <- tapEvent{from: as}:
			default: // the recent wait's bound covers it
			}
		}
	}
}

// deliver routes an agent's reply to its tap. A reply nobody waits for
// (the tap ended, a cancel was lost) is answered with a cancel, so no
// agent follows for nothing.
func (t *tapRelay) deliver(as *agentStream, r *api.TapReply) {
	t.mu.Lock()
	run := t.sessions[r.GetId()]
	if run == nil || !run.asked[as] {
		t.mu.Unlock()
		if !r.GetDone() {
			as.offer(cancelMsg(r.GetId()))
		}
		return
	}
	select {
	case run.events <- tapEvent{from: as, reply: r}:
	default:
		t.log.Debug("tap falls behind; dropping an agent's reply", "id", r.GetId(), "node", as.node)
	}
	t.mu.Unlock()
}

// start registers a tap and asks every stream; it returns the streams
// asked.
func (t *tapRelay) start(req *api.TapRequest) (*tapRun, map[*agentStream]bool, error) {
	var b [16]byte
	rand.Read(b[:])
	req.Id = hex.EncodeToString(b[:])
	run := &tapRun{req: req, events: make(chan tapEvent, tapEvents), asked: map[*agentStream]bool{}}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, nil, errShuttingDown
	}
	t.sessions[req.Id] = run
	pending := map[*agentStream]bool{}
	for as := range t.streams {
		if as.offer(tapMsg(req)) {
			run.asked[as], pending[as] = true, true
		} else {
			t.log.Warn("tap: agent stream is backed up; leaving it out", "node", as.node)
		}
	}
	return run, pending, nil
}

// finish unregisters a tap and cancels it at the agents still following.
func (t *tapRelay) finish(run *tapRun) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sessions, run.req.Id)
	if !run.req.GetFollow() {
		return
	}
	for as := range run.asked {
		as.offer(cancelMsg(run.req.Id))
	}
}

// run serves one tap: each gets the recent calls (at most req.Last, oldest
// first), then, following, the live ones. recent, when set, learns how
// many agents were asked and answered in time, before the first call. It
// returns nil once a tap without follow is done, and otherwise when ctx
// ends (ctx's error) or each fails (its error).
func (t *tapRelay) run(ctx context.Context, req *api.TapRequest, recent func(asked, answered int), each func(*api.Call) error) error {
	req = proto.Clone(req).(*api.TapRequest)
	if req.Namespace == "" {
		req.Namespace = defaultNamespace
	}
	if err := checkService(req.Namespace, req.Service); err != nil {
		return status.Errorf(codes.InvalidArgument, "tap: %v", err)
	}
	req.Last = min(req.Last, maxTapLast)
	run, pending, err := t.start(req)
	if err != nil {
		return err
	}
	defer t.finish(run)
	asked, answered := len(pending), 0
	merged := &recentMerge{n: int(req.Last)}
	dedup := newLiveDedup(tapHold)
	var early []*api.Call // live calls that came during the recent wait
	first := map[*agentStream]bool{}
	wait := time.NewTimer(tapRecentWait)
	defer wait.Stop()
	for len(pending) > 0 {
		select {
		case ev := <-run.events:
			switch {
			case ev.reply == nil:
				delete(pending, ev.from)
			case !first[ev.from]:
				first[ev.from] = true
				if pending[ev.from] {
					delete(pending, ev.from)
					answered++
				}
				merged.add(ev.reply.GetCalls())
			case len(early) < maxHeld:
				early = append(early, ev.reply.GetCalls()...)
			}
		case <-wait.C:
			t.log.Info("tap: agents did not answer in time", "service", req.Namespace+"/"+req.Service,
				"missing", len(pending), "asked", asked)
			pending = nil
		case <-t.closing:
			return errShuttingDown
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if recent != nil {
		recent(asked, answered)
	}
	for _, c := range merged.calls {
		if err := each(c); err != nil {
			return err
		}
	}
	if !req.Follow {
		return nil
	}
	return t.follow(ctx, run, first, dedup, early, each)
}

// follow passes on live calls until ctx ends.
func (t *tapRelay) follow(ctx context.Context, run *tapRun, first map[*agentStream]bool, dedup *liveDedup,
	early []*api.Call, each func(*api.Call) error) error {
	for _, c := range early {
		if err := dedup.add(c, time.Now(), each); err != nil {
			return err
		}
	}
	tick := time.NewTicker(tapHold / 4)
	defer tick.Stop()
	for {
		select {
		case ev := <-run.events:
			if ev.reply == nil {
				continue
			}
			if !first[ev.from] { // a late recent part, or a new stream's (empty) one
				first[ev.from] = true
				continue
			}
			now := time.Now()
			for _, c := range ev.reply.GetCalls() {
				if c == nil {
					continue
				}
				if err := dedup.add(c, now, each); err != nil {
					return err
				}
			}
		case now := <-tick.C:
			if err := dedup.flush(now, each); err != nil {
				return err
			}
		case <-t.closing:
			return errShuttingDown
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
