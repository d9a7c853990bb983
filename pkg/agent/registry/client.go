package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/hms-node/hms-node/pkg/api"
)

// Stream timing: heartbeat when the control plane announces none, and the
// reconnect backoff.
const (
	defaultHeartbeat = 5 * time.Second
	minBackoff       = 100 * time.Millisecond
	maxBackoff       = 5 * time.Second
)

// Client keeps one Agents.Connect stream to a control-plane replica and
// applies what it receives to Table. The Table keeps serving the last
// known state while the stream is down. Set the fields, then call Run once.
type Client struct {
	// Conn is dialled by the caller (TLS and the choice of replica are the
	// caller's).
	Conn grpc.ClientConnInterface
	// Node is sent in every Hello.
	Node *api.Node
	// Table receives snapshots and deltas.
	Table *Table
	// Instances returns the node's current instances, sent in every Hello,
	// so that updates reported while disconnected are not lost. Nil = none.
	Instances func() []*api.Instance
	// OnChange, if set, is called after each snapshot or delta is applied
	// (the agent re-syncs its eBPF maps and DNS). It runs on the stream's
	// receiving goroutine: a slow OnChange delays the next update.
	OnChange func()
	// OnControl, if set, receives the control messages the client does not
	// handle itself (tap requests and cancels). ctx ends with the stream
	// that carried m, so work started for it ends with it; a reconnect
	// keeps calling the same hook. It runs on the receiving goroutine and
	// must not block.
	OnControl func(ctx context.Context, m *api.ControlMessage)
	// Log receives connection events. Nil = discard.
	Log *slog.Logger

	once sync.Once
	wake chan struct{} // a Report is pending

	// mu guards the fields below.
	mu        sync.Mutex
	state     ClientState
	pending   []*api.InstanceUpdate
	heartbeat time.Duration          // as last announced by a snapshot
	outbox    chan *api.AgentMessage // Send's queue to the current stream; nil when down
	outDone   chan struct{}          // closed when that stream ends
}

// outboxSize bounds the messages Send may queue ahead of the stream.
const outboxSize = 64

// ErrNotConnected is Send's error while no stream is up.
var ErrNotConnected = errors.New("not connected to the control plane")

// Send queues m for the current stream and waits until it is queued, ctx
// ends or the stream ends. Messages are not kept across reconnects: a
// message for a stream that ended is dropped with an error.
func (c *Client) Send(ctx context.Context, m *api.AgentMessage) error {
	c.mu.Lock()
	out, done := c.outbox, c.outDone
	c.mu.Unlock()
	if out == nil {
		return ErrNotConnected
	}
	select {
	case out <- m:
		return nil
	case <-done:
		return ErrNotConnected
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ClientState is the stream's state, for `status`.
type ClientState struct {
	Connected bool
	Since     time.Time // when Connected last changed
	LastSync  time.Time // when a snapshot or delta was last applied
	Revision  int64     // the table's revision
	LastError string    // why the last stream ended
	Lag       Lag       // propagation lag of the deltas applied
}

// LagBuckets are the upper bounds, in seconds, of Lag's counts.
var LagBuckets = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Lag counts the deltas applied by their propagation lag: from the control
// plane sending one (Delta.sent_unix_nano; clocks of both hosts) to its
// being applied here.
type Lag struct {
	Counts [len(LagBuckets) + 1]uint64 // per bucket, not cumulative; the last is > 10 s
	Sum    time.Duration
}

func (l *Lag) observe(d time.Duration) {
	d = max(d, 0) // a control plane's clock ahead of ours
	i := 0
	for i < len(LagBuckets) && d.Seconds() > LagBuckets[i] {
		i++
	}
	l.Counts[i]++
	l.Sum += d
}

func (c *Client) init() {
	c.once.Do(func() { c.wake = make(chan struct{}, 1) })
}

// State returns the current state.
func (c *Client) State() ClientState {
	c.mu.Lock()
	s := c.state
	c.mu.Unlock()
	if c.Table != nil {
		s.Revision = c.Table.Revision()
	}
	return s
}

// Report queues an InstanceUpdate to send at once. Updates of one instance
// coalesce to the latest. When a new stream starts, the queue is dropped:
// its Hello carries Instances(), which already reflects them.
func (c *Client) Report(inst *api.Instance, removed bool) {
	if inst == nil {
		return
	}
	c.init()
	u := &api.InstanceUpdate{Instance: proto.Clone(inst).(*api.Instance), Removed: removed}
	c.mu.Lock()
	replaced := false
	for i, p := range c.pending {
		if sameInstance(p.Instance, inst) {
			c.pending[i], replaced = u, true
			break
		}
	}
	if !replaced {
		c.pending = append(c.pending, u)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func sameInstance(a, b *api.Instance) bool {
	return nsOr(a.Namespace) == nsOr(b.Namespace) && a.Service == b.Service && a.Node == b.Node &&
		a.Workload == b.Workload && a.Ip == b.Ip && a.Port == b.Port
}

// Run keeps the stream up until ctx ends, then returns ctx.Err(). Each
// stream says Hello{node, resume_revision, instances}, applies the
// snapshot or deltas it gets, and sends a heartbeat every
// snapshot.heartbeat_ms (default 5s). When a stream fails Run reconnects
// after a jittered backoff (100ms doubling to 5s, reset once a stream has
// synced), resuming from the table's revision.
func (c *Client) Run(ctx context.Context) error {
	if c.Conn == nil || c.Table == nil || c.Node == nil {
		return errors.New("registry client: Conn, Table and Node are required")
	}
	c.init()
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	delay := minBackoff
	for {
		synced, err := c.session(ctx)
		if ctx.Err() != nil {
			c.setConnected(false, "")
			return ctx.Err()
		}
		c.setConnected(false, err.Error())
		if synced {
			delay = minBackoff
		}
		wait := delay/2 + rand.N(delay/2+1)
		log.Warn("control-plane stream ended, reconnecting", "err", err, "retry_in", wait, "revision", c.Table.Revision())
		select {
		case <-ctx.Done():
			c.setConnected(false, "")
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(2*delay, maxBackoff)
	}
}

func (c *Client) setConnected(up bool, lastErr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Connected != up {
		c.state.Connected, c.state.Since = up, time.Now()
	}
	if lastErr != "" {
		c.state.LastError = lastErr
	}
}

// session runs one stream until it fails. synced reports whether it
// applied anything.
func (c *Client) session(ctx context.Context) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.NewAgentsClient(c.Conn).Connect(ctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	// Drop queued reports first: Instances() below covers them, and any
	// reported from now on are sent after the Hello.
	c.mu.Lock()
	c.pending = nil
	hb := c.heartbeat
	out, outDone := make(chan *api.AgentMessage, outboxSize), make(chan struct{})
	c.mu.Unlock()
	hello := &api.Hello{Node: c.Node, ResumeRevision: c.Table.Revision()}
	if c.Instances != nil {
		hello.Instances = c.Instances()
	}
	if err := stream.Send(&api.AgentMessage{Msg: &api.AgentMessage_Hello{Hello: hello}}); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	c.setConnected(true, "")
	c.mu.Lock()
	c.outbox, c.outDone = out, outDone
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.outbox, c.outDone = nil, nil
		c.mu.Unlock()
		close(outDone)
	}()

	var applied atomic.Bool
	interval := make(chan time.Duration, 1)
	recvErr := make(chan error, 1)
	go func() { recvErr <- c.receive(ctx, stream, interval, &applied) }()
	defer func() {
		cancel()
		<-recvErr // join the receiver: cancel ends its Recv
	}()

	if hb <= 0 {
		hb = defaultHeartbeat
	}
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	heartbeat := &api.AgentMessage{Msg: &api.AgentMessage_Heartbeat{Heartbeat: &api.Heartbeat{}}}
	for {
		select {
		case <-ctx.Done():
			return applied.Load(), ctx.Err()
		case err := <-recvErr:
			recvErr <- err // for the deferred join
			return applied.Load(), err
		case d := <-interval:
			ticker.Reset(d)
		case <-ticker.C:
			if err := stream.Send(heartbeat); err != nil {
				return applied.Load(), fmt.Errorf("send heartbeat: %w", err)
			}
		case <-c.wake:
			if err := c.sendPending(stream); err != nil {
				return applied.Load(), err
			}
		case m := <-out:
			if err := stream.Send(m); err != nil {
				return applied.Load(), fmt.Errorf("send: %w", err)
			}
		}
	}
}

func (c *Client) sendPending(stream api.Agents_ConnectClient) error {
	c.mu.Lock()
	batch := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, u := range batch {
		m := &api.AgentMessage{Msg: &api.AgentMessage_Instance{Instance: u}}
		if err := stream.Send(m); err != nil {
			return fmt.Errorf("send instance update: %w", err) // the next Hello carries it
		}
	}
	return nil
}

// receive applies what the control plane sends until the stream fails.
func (c *Client) receive(ctx context.Context, stream api.Agents_ConnectClient, interval chan time.Duration, applied *atomic.Bool) error {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("stream closed by the control plane")
		}
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		changed, sent := false, int64(0)
		switch x := m.Msg.(type) {
		case *api.ControlMessage_Snapshot:
			c.Table.ApplySnapshot(x.Snapshot)
			changed = true
			c.announceHeartbeat(time.Duration(x.Snapshot.GetHeartbeatMs())*time.Millisecond, interval)
		case *api.ControlMessage_Delta:
			changed = c.Table.applyDelta(x.Delta)
			sent = x.Delta.GetSentUnixNano()
		default:
			if c.OnControl != nil {
				c.OnControl(ctx, m)
			}
			continue // not a registry sync
		}
		c.mu.Lock()
		c.state.LastSync = time.Now()
		if sent > 0 {
			c.state.Lag.observe(c.state.LastSync.Sub(time.Unix(0, sent)))
		}
		c.mu.Unlock()
		applied.Store(true)
		if changed && c.OnChange != nil {
			c.OnChange()
		}
	}
}

func (c *Client) announceHeartbeat(d time.Duration, interval chan time.Duration) {
	if d <= 0 {
		d = defaultHeartbeat
	}
	c.mu.Lock()
	same := c.heartbeat == d
	c.heartbeat = d
	c.mu.Unlock()
	if same {
		return
	}
	select { // keep only the newest interval
	case <-interval:
	default:
	}
	interval <- d
}
