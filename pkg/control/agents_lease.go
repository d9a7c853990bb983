package control

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// register grants the stream's lease and puts the node and the Hello's
// instances under it.
func (as *agentStream) register(ctx context.Context, hello *api.Hello) error {
	if hello.GetNode() == nil {
		return status.Error(codes.InvalidArgument, "hello: node is missing")
	}
	node := proto.Clone(hello.GetNode()).(*api.Node)
	if err := checkName("node name", node.GetName()); err != nil {
		return status.Errorf(codes.InvalidArgument, "hello: %v", err)
	}
	as.node = node.GetName()
	val, err := proto.Marshal(node)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "hello: encode node: %v", err)
	}
	kvs := map[string][]byte{nodeKey(node.GetName()): val}
	for i, in := range hello.GetInstances() {
		key, val, err := as.instance(in)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "hello: instance #%d: %v", i+1, err)
		}
		kvs[key] = val
	}
	st := as.svc.st
	octx, cancel := st.opCtx(ctx)
	lease, err := st.cli.Grant(octx, as.svc.leaseTTL)
	cancel()
	if err != nil {
		return storeErr(ctx, err, true)
	}
	as.lease, as.lastRenew = lease.ID, time.Now()
	if err := as.putAll(ctx, kvs); err != nil {
		return err
	}
	as.svc.log.Info("agent connected", "node", as.node, "instances", len(hello.GetInstances()),
		"resume", hello.GetResumeRevision())
	return nil
}

// instance checks an instance of this stream's node and encodes it.
func (as *agentStream) instance(in *api.Instance) (string, []byte, error) {
	if in == nil {
		return "", nil, errors.New("empty instance")
	}
	in = proto.Clone(in).(*api.Instance)
	if in.Node != "" && in.Node != as.node {
		return "", nil, fmt.Errorf("instance of node %q on the stream of node %q", in.Node, as.node)
	}
	in.Node = as.node
	if in.Namespace == "" {
		in.Namespace = defaultNamespace
	}
	if err := checkName("namespace", in.Namespace); err != nil {
		return "", nil, err
	}
	if in.Namespace == systemNamespace {
		return "", nil, fmt.Errorf("namespace %s is reserved for the control plane", systemNamespace)
	}
	if err := checkName("service", in.Service); err != nil {
		return "", nil, err
	}
	val, err := proto.Marshal(in)
	return instanceKey(in), val, err
}

// putAll puts kvs under the stream's lease, in chunks of putChunk, unless
// the node is revoked (checked in etcd, so no replica's lag lets it back).
func (as *agentStream) putAll(ctx context.Context, kvs map[string][]byte) error {
	ops := make([]clientv3.Op, 0, len(kvs))
	for k, v := range kvs {
		ops = append(ops, clientv3.OpPut(k, string(v), clientv3.WithLease(as.lease)))
	}
	for len(ops) > 0 {
		n := min(len(ops), putChunk)
		octx, cancel := as.svc.st.opCtx(ctx)
		resp, err := as.svc.st.cli.Txn(octx).
			If(clientv3.Compare(clientv3.CreateRevision(revocationKey(as.node)), "=", 0)).
			Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			return storeErr(ctx, err, true)
		}
		if !resp.Succeeded {
			return status.Errorf(codes.PermissionDenied, "node %s is revoked", as.node)
		}
		ops = ops[n:]
	}
	return nil
}

// sync sends a snapshot (or, resuming from a revision the ring covers, only
// the newer deltas) and subscribes to the deltas after it.
func (as *agentStream) sync(ctx context.Context, resume int64) (*subscription, error) {
	if resume > 0 {
		if cur, err := as.svc.st.currentRevision(ctx); err == nil && resume <= cur {
			if sub, backlog, ok := as.svc.hub.subscribe(resume); ok {
				return sub, as.sendDeltas(sub, backlog)
			}
		}
	}
	for {
		v, err := as.svc.reads.read(ctx, as.svc.st)
		if err != nil {
			return nil, err
		}
		sub, backlog, ok := as.svc.hub.subscribe(v.rev)
		if !ok {
			continue // the ring moved past the snapshot already: take a newer one
		}
		snap := &api.Snapshot{
			Revision: v.rev, Services: v.services, Instances: v.instances, Externals: v.externals,
			Routes: v.routes, Limits: v.limits, HeartbeatMs: as.svc.heartbeat.Milliseconds(),
			Revocations: v.revoked, Nodes: v.nodes,
		}
		if err := as.stream.Send(&api.ControlMessage{Msg: &api.ControlMessage_Snapshot{Snapshot: snap}}); err != nil {
			as.svc.hub.unsubscribe(sub)
			return nil, err
		}
		return sub, as.sendDeltas(sub, backlog)
	}
}

func (as *agentStream) sendDeltas(sub *subscription, ds []*api.Delta) error {
	for _, d := range ds {
		if err := as.stream.Send(&api.ControlMessage{Msg: &api.ControlMessage_Delta{Delta: sentNow(d)}}); err != nil {
			as.svc.hub.unsubscribe(sub)
			return err
		}
	}
	return nil
}

// handle serves one message after the Hello.
func (as *agentStream) handle(ctx context.Context, m *api.AgentMessage) error {
	switch msg := m.GetMsg().(type) {
	case *api.AgentMessage_Heartbeat:
	case *api.AgentMessage_Instance:
		if err := as.update(ctx, msg.Instance); err != nil {
			return err
		}
	case *api.AgentMessage_Tap:
		as.svc.taps.deliver(as, msg.Tap)
	case *api.AgentMessage_Stats:
		as.svc.stats.put(as.node, msg.Stats)
	case *api.AgentMessage_Hello:
		return status.Error(codes.InvalidArgument, "hello may be sent only once per stream")
	default:
		return status.Error(codes.InvalidArgument, "unknown agent message")
	}
	return as.renew(ctx)
}

func (as *agentStream) update(ctx context.Context, u *api.InstanceUpdate) error {
	key, val, err := as.instance(u.GetInstance())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "instance update: %v", err)
	}
	octx, cancel := as.svc.st.opCtx(ctx)
	defer cancel()
	// Not for a revoked node (checked in etcd: no replica's lag lets it
	// back), and never taking over a key that another stream of the node
	// holds: during an upgrade the old agent's late reports must not move
	// the instance onto the old stream's lease, which expires with it.
	notRevoked := clientv3.Compare(clientv3.CreateRevision(revocationKey(as.node)), "=", 0)
	var op clientv3.Op
	if u.GetRemoved() {
		op = clientv3.OpDelete(key)
	} else {
		op = clientv3.OpPut(key, string(val), clientv3.WithLease(as.lease))
	}
	ours := clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", as.lease)}, []clientv3.Op{op},
		[]clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, []clientv3.Op{op}, nil)})
	resp, err := as.svc.st.cli.Txn(octx).If(notRevoked).Then(ours).Commit()
	if err == nil && !resp.Succeeded {
		return status.Errorf(codes.PermissionDenied, "node %s is revoked", as.node)
	}
	return storeErr(ctx, err, true)
}

// renew keeps the stream's lease alive (at most a few times per heartbeat).
// A lease etcd already expired ends the stream, so the agent reconnects and
// registers again; a store outage does not (the TTL decides).
func (as *agentStream) renew(ctx context.Context) error {
	if time.Since(as.lastRenew) < as.svc.heartbeat/3 {
		return nil
	}
	octx, cancel := as.svc.st.opCtx(ctx)
	defer cancel()
	_, err := as.svc.st.cli.KeepAliveOnce(octx, as.lease)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return status.Errorf(codes.Unavailable, "the lease of node %s expired; reconnect", as.node)
	case err != nil:
		as.svc.log.Warn("renewing agent lease failed", "node", as.node, "err", err)
		return nil
	}
	as.lastRenew = time.Now()
	return nil
}
