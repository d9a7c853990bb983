package control

import (
	"cmp"
	"context"
	"slices"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// view is the whole registry at one revision, decoded.
type view struct {
	rev       int64
	services  []*api.Service // sorted by namespace, name (etcd key order)
	instances []*api.Instance
	externals []*api.ExternalService
	nodes     []*api.Node
	routes    []*api.Route
	limits    []*api.RateLimit
	revoked   []*api.Revocation
}

// readAll is one consistent Get of the whole registry prefix.
func (s *store) readAll(ctx context.Context) (*view, error) {
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(octx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, storeErr(ctx, err, false)
	}
	v := &view{rev: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		c, err := decodeChange(string(kv.Key), kv.Value, kv.ModRevision)
		if err != nil {
			s.log.Warn("skipping undecodable registry key", "key", string(kv.Key), "err", err)
			continue
		}
		v.add(c)
	}
	return v, nil
}

// sortServices orders the services by namespace, then name: etcd's key
// order puts "a-b/x" before "a/x".
func (v *view) sortServices() {
	slices.SortFunc(v.services, func(a, b *api.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

func (v *view) add(c *api.Change) {
	switch o := c.GetObject().(type) {
	case *api.Change_Service:
		v.services = append(v.services, o.Service)
	case *api.Change_Instance:
		v.instances = append(v.instances, o.Instance)
	case *api.Change_External:
		v.externals = append(v.externals, o.External)
	case *api.Change_Node:
		v.nodes = append(v.nodes, o.Node)
	case *api.Change_Route:
		v.routes = append(v.routes, o.Route)
	case *api.Change_Limit:
		v.limits = append(v.limits, o.Limit)
	case *api.Change_Revocation:
		v.revoked = append(v.revoked, o.Revocation)
	}
}

// currentRevision is the store's revision now (a cheap linearizable read).
func (s *store) currentRevision(ctx context.Context) (int64, error) {
	octx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(octx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, storeErr(ctx, err, false)
	}
	return resp.Header.Revision, nil
}

// deleteService removes a service, releases its VIP and drops its routes
// and rate limit, in one transaction. Instances stay: they belong to agents.
func (s *store) deleteService(ctx context.Context, ns, name string) (rev int64, err error) {
	err = s.retry(ctx, func(ctx context.Context) (err error) {
		rev, err = s.tryDelete(ctx, ns, name)
		return err
	})
	return rev, err
}

func (s *store) tryDelete(ctx context.Context, ns, name string) (int64, error) {
	key := serviceKey(ns, name)
	get, err := s.cli.Get(ctx, key)
	if err != nil {
		return 0, storeErr(ctx, err, true)
	}
	if len(get.Kvs) == 0 {
		return 0, status.Errorf(codes.NotFound, "service %s/%s does not exist", ns, name)
	}
	svc := &api.Service{}
	if err := proto.Unmarshal(get.Kvs[0].Value, svc); err != nil {
		s.log.Warn("deleting undecodable service", "key", key, "err", err)
	}
	ops := []clientv3.Op{
		clientv3.OpDelete(key),
		clientv3.OpDelete(routesPrefix(ns, name), clientv3.WithPrefix()),
		clientv3.OpDelete(rateLimitKey(ns, name)),
	}
	if svc.GetVip() != "" {
		// Release the VIP only if it is still this service's.
		vk := vipKey(svc.GetVip())
		ops = append(ops, clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(vk), "=", relKey(key))},
			[]clientv3.Op{clientv3.OpDelete(vk)}, nil))
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", get.Kvs[0].ModRevision)).
		Then(ops...).Commit()
	switch {
	case err != nil:
		return 0, storeErr(ctx, err, true)
	case !resp.Succeeded:
		return 0, errConflict
	}
	return resp.Header.Revision, nil
}
