package control

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// putChunk bounds the operations of one lease transaction, below etcd's
// default --max-txn-ops (128), so an external cluster at defaults works.
const putChunk = 100

// agentsService implements api.AgentsServer.
type agentsService struct {
	api.UnimplementedAgentsServer
	st        *store
	hub       *hub
	heartbeat time.Duration
	leaseTTL  int64
	log       *slog.Logger
	revoked   *revocations
	reads     sharedReads // snapshots shared by streams that sync at once
	taps      *tapRelay   // tap requests out, replies in
	stats     *meshStats  // the agents' latest Stats

	// stop ends every stream when the replica shuts down; expiries are
	// the lease-expiry goroutines, joined on shutdown.
	stop     <-chan struct{}
	expiries *sync.WaitGroup
}

// Connect serves one agent stream.
func (a *agentsService) Connect(stream api.Agents_ConnectServer) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	as := &agentStream{svc: a, stream: stream, recv: make(chan *api.AgentMessage, 16), cancel: cancel,
		out: make(chan *api.ControlMessage, agentOutbox)}
	go as.receive(ctx)
	err := as.run(ctx)
	if as.lease != 0 {
		a.expireLater(as.lease, as.lastMsg, as.node)
	}
	if err != nil && status.Code(err) != codes.Canceled {
		a.log.Info("agent stream ended", "node", as.node, "err", err)
	}
	return err
}

// expireLater ends a finished stream's lease once its last message is
// 3 heartbeats old. It is not revoked at once: a dead agent's instances
// vanish after 3 missed heartbeats, while an upgrade's new stream has put
// the same keys under its own lease by then, so they stay (revoking deletes
// only the keys still attached to this lease). etcd's own TTL (3 heartbeats,
// rounded up to whole seconds) is the backstop should this replica die.
func (a *agentsService) expireLater(lease clientv3.LeaseID, last time.Time, node string) {
	a.expiries.Add(1)
	go func() {
		defer a.expiries.Done()
		select {
		case <-a.stop:
			return // leave it to etcd's TTL
		case <-time.After(time.Until(last.Add(3 * a.heartbeat))):
		}
		ctx, cancel := a.st.opCtx(context.Background())
		defer cancel()
		if _, err := a.st.cli.Revoke(ctx, lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			a.log.Warn("expiring agent lease failed; etcd will expire it", "node", node, "err", err)
		}
	}()
}

var errShuttingDown = status.Error(codes.Unavailable, "control plane shutting down; reconnect")

func (as *agentStream) timeout() error {
	return status.Errorf(codes.DeadlineExceeded, "no message from the agent for %s (3 heartbeats)",
		3*as.svc.heartbeat)
}

// agentStream is the state of one Connect call.
type agentStream struct {
	svc     *agentsService
	stream  api.Agents_ConnectServer
	recv    chan *api.AgentMessage
	recvErr error // set before recv is closed
	cancel  context.CancelCauseFunc
	out     chan *api.ControlMessage // tap requests and cancels to send (offer)

	node      string
	lease     clientv3.LeaseID
	lastMsg   time.Time // last message received
	lastRenew time.Time
}

// receive owns stream.Recv; run owns stream.Send.
func (as *agentStream) receive(ctx context.Context) {
	defer close(as.recv)
	for {
		m, err := as.stream.Recv()
		if err != nil {
			as.recvErr = err
			return
		}
		select {
		case as.recv <- m:
		case <-ctx.Done():
			return
		}
	}
}

// next waits for the agent's first message, at most 3 heartbeats.
func (as *agentStream) next(ctx context.Context, deadline *time.Timer) (*api.AgentMessage, error) {
	select {
	case m, ok := <-as.recv:
		if !ok {
			return nil, as.recvErr
		}
		as.lastMsg = time.Now()
		return m, nil
	case <-deadline.C:
		return nil, as.timeout()
	case <-as.svc.stop:
		return nil, errShuttingDown
	case <-ctx.Done():
		return nil, ctxErr(ctx)
	}
}

func (as *agentStream) run(ctx context.Context) error {
	deadline := time.NewTimer(3 * as.svc.heartbeat)
	defer deadline.Stop()
	m, err := as.next(ctx, deadline)
	if err != nil {
		return err
	}
	hello := m.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message of an agent stream must be Hello")
	}
	if err := as.authorize(ctx, hello); err != nil {
		return err
	}
	defer as.svc.revoked.untrack(as.node, as)
	if err := as.register(ctx, hello); err != nil {
		return err
	}
	sub, err := as.sync(ctx, hello.GetResumeRevision())
	if err != nil {
		return err
	}
	defer func() { as.svc.hub.unsubscribe(sub) }()
	as.svc.taps.attach(as)
	defer as.svc.taps.detach(as)
	// Registration and the snapshot may take longer than the deadline on a
	// loaded store; the agent's silence is measured from now.
	deadline.Reset(3 * as.svc.heartbeat)
	for {
		select {
		case d, ok := <-sub.ch:
			if !ok { // fell behind (or the hub lost history): start over
				as.svc.log.Info("agent stream fell behind; sending a snapshot", "node", as.node)
				if sub, err = as.sync(ctx, 0); err != nil {
					return err
				}
				continue
			}
			if err := as.stream.Send(&api.ControlMessage{Msg: &api.ControlMessage_Delta{Delta: sentNow(d)}}); err != nil {
				return err
			}
		case m := <-as.out:
			if err := as.stream.Send(m); err != nil {
				return err
			}
		case m, ok := <-as.recv:
			if !ok {
				return as.recvErr
			}
			as.lastMsg = time.Now()
			deadline.Reset(3 * as.svc.heartbeat)
			if err := as.handle(ctx, m); err != nil {
				return err
			}
		case <-deadline.C:
			return as.timeout()
		case <-as.svc.stop:
			return errShuttingDown
		case <-ctx.Done():
			return ctxErr(ctx)
		}
	}
}

// ctxErr is why ctx ended: the cause it was canceled with when that is a
// status (a revocation), else the context's own error as a status.
func ctxErr(ctx context.Context) error {
	if st, ok := status.FromError(context.Cause(ctx)); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		return st.Err()
	}
	return status.FromContextError(ctx.Err()).Err()
}

// authorize checks that the Hello's node is the caller's (its certificate
// names it) and tracks the stream, so a revocation of the node ends it.
func (as *agentStream) authorize(ctx context.Context, hello *api.Hello) error {
	if hello.GetNode() == nil {
		return status.Error(codes.InvalidArgument, "hello: node is missing")
	}
	c, err := callerOf(ctx)
	if err != nil || c == nil || !c.id.IsNode() {
		return status.Error(codes.Unauthenticated, "an agent stream needs a node certificate")
	}
	if name := hello.GetNode().GetName(); name != c.node {
		return status.Errorf(codes.PermissionDenied, "hello names node %q but the certificate is node %q's", name, c.node)
	}
	as.node = c.node
	if !as.svc.revoked.track(c.node, as, as.cancel) {
		return status.Errorf(codes.PermissionDenied, "node %s is revoked", c.node)
	}
	return nil
}
