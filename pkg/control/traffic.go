package control

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"strings"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Traffic rules set from the CLI (`limit set`, `limit clear`, `route set`).
// They live beside the service (ratelimits/<ns>/<svc>, routes/<ns>/<svc>/
// <escaped path>), stream to agents as deltas like every registry key, and
// go with the service when it is deleted. Precedence over the manifest's
// mesh.rate_limit and mesh.routes is the agent's, and documented in
// docs/operations.md: a RateLimit object wins over mesh.rate_limit; a Route
// wins over the manifest's route of the same path.
const (
	// maxRPS and maxRouteRetries match the manifest's bounds.
	maxRPS          = 1e9
	maxRouteRetries = 10
	// maxRoutePath keeps a route's key well inside etcd's limits.
	maxRoutePath = 1024
)

// routeKey is deterministic from the path, so setting a route again
// updates it: one route per (service, path).
func routeKey(ns, svc, path string) string { return routesPrefix(ns, svc) + url.PathEscape(path) }

// SetLimit stores the rate limit of an existing service.
func (r *registryService) SetLimit(ctx context.Context, req *api.SetLimitRequest) (*api.SetLimitResponse, error) {
	if req.GetLimit() == nil {
		return nil, status.Error(codes.InvalidArgument, "set limit: no limit given")
	}
	l := proto.Clone(req.GetLimit()).(*api.RateLimit)
	if l.Namespace == "" {
		l.Namespace = defaultNamespace
	}
	if err := checkService(l.Namespace, l.Service); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set limit: %v", err)
	}
	if math.IsNaN(l.Rps) || l.Rps <= 0 || l.Rps > maxRPS {
		return nil, status.Errorf(codes.InvalidArgument,
			"set limit of %s/%s: %v requests per second is out of range: give a rate above 0, such as 50rps", l.Namespace, l.Service, l.Rps)
	}
	val, err := proto.Marshal(l)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set limit: encode: %v", err)
	}
	if _, err := r.st.putForService(ctx, l.Namespace, l.Service, clientv3.OpPut(rateLimitKey(l.Namespace, l.Service), string(val))); err != nil {
		return nil, err
	}
	r.st.log.Info("rate limit set", "namespace", l.Namespace, "service", l.Service, "rps", l.Rps)
	return &api.SetLimitResponse{Limit: l}, nil
}

// ClearLimit removes the rate limit set by SetLimit. The manifest's
// mesh.rate_limit, if any, then applies again; the error for a service
// without a limit says so.
func (r *registryService) ClearLimit(ctx context.Context, req *api.ClearLimitRequest) (*api.ClearLimitResponse, error) {
	ns, name := req.GetNamespace(), req.GetService()
	if ns == "" {
		ns = defaultNamespace
	}
	if err := checkService(ns, name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "clear limit: %v", err)
	}
	resp, err := r.st.putForService(ctx, ns, name, clientv3.OpDelete(rateLimitKey(ns, name)), clientv3.OpGet(serviceKey(ns, name)))
	if err != nil {
		return nil, err
	}
	if resp.Responses[0].GetResponseDeleteRange().GetDeleted() == 0 {
		msg := fmt.Sprintf("service %s/%s has no rate limit set with `limit set`", ns, name)
		svc := &api.Service{}
		if kvs := resp.Responses[1].GetResponseRange().GetKvs(); len(kvs) == 1 && proto.Unmarshal(kvs[0].Value, svc) == nil &&
			svc.GetMesh().GetRateLimitRps() > 0 {
			msg += fmt.Sprintf("; its manifest's mesh.rate_limit (%g rps) applies: change that with apply", svc.GetMesh().GetRateLimitRps())
		}
		return nil, status.Error(codes.NotFound, msg)
	}
	r.st.log.Info("rate limit cleared", "namespace", ns, "service", name)
	return &api.ClearLimitResponse{}, nil
}

// SetRoute creates or updates the route of one path of an existing
// service.
func (r *registryService) SetRoute(ctx context.Context, req *api.SetRouteRequest) (*api.SetRouteResponse, error) {
	if req.GetRoute() == nil {
		return nil, status.Error(codes.InvalidArgument, "set route: no route given")
	}
	rt := proto.Clone(req.GetRoute()).(*api.Route)
	if rt.Namespace == "" {
		rt.Namespace = defaultNamespace
	}
	if err := checkService(rt.Namespace, rt.Service); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set route: %v", err)
	}
	if err := checkRoute(rt); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set route of %s/%s: %v", rt.Namespace, rt.Service, err)
	}
	val, err := proto.Marshal(rt)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set route: encode: %v", err)
	}
	if _, err := r.st.putForService(ctx, rt.Namespace, rt.Service, clientv3.OpPut(routeKey(rt.Namespace, rt.Service, rt.Path), string(val))); err != nil {
		return nil, err
	}
	r.st.log.Info("route set", "namespace", rt.Namespace, "service", rt.Service, "path", rt.Path,
		"timeout_ms", rt.TimeoutMs, "retries", rt.Retries)
	return &api.SetRouteResponse{Route: rt}, nil
}

func checkService(ns, name string) error {
	if err := checkName("namespace", ns); err != nil {
		return err
	}
	return checkName("service", name)
}

// checkRoute holds a route to what the manifest accepts for mesh.routes.
// Retries 0 cannot be told from "not set" on the wire, so a route must
// set a timeout or at least one retry.
func checkRoute(rt *api.Route) error {
	switch {
	case !strings.HasPrefix(rt.Path, "/") || strings.ContainsAny(rt.Path, " \t\r\n"):
		return fmt.Errorf("path %q must start with '/' and hold no spaces", rt.Path)
	case len(rt.Path) > maxRoutePath:
		return fmt.Errorf("path is %d bytes long; at most %d", len(rt.Path), maxRoutePath)
	case rt.TimeoutMs < 0:
		return fmt.Errorf("timeout %dms is negative", rt.TimeoutMs)
	case rt.Retries > maxRouteRetries:
		return fmt.Errorf("retries %d is out of range 0..%d", rt.Retries, maxRouteRetries)
	case rt.TimeoutMs == 0 && rt.Retries == 0:
		return fmt.Errorf("route %s sets neither a timeout nor retries: give --timeout or --retries", rt.Path)
	}
	return nil
}

// putForService runs ops in one transaction only if the service ns/name
// exists, so no rule is ever stored for a service that is gone (a delete
// racing with it removes the rule with the service). A passing etcd outage
// is retried: the ops are idempotent.
func (s *store) putForService(ctx context.Context, ns, name string, ops ...clientv3.Op) (resp *clientv3.TxnResponse, err error) {
	err = s.retry(ctx, func(ctx context.Context) error {
		resp, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(serviceKey(ns, name)), ">", 0)).Then(ops...).Commit()
		if err != nil {
			return storeErr(ctx, err, true)
		}
		if !resp.Succeeded {
			return status.Errorf(codes.NotFound, "service %s/%s does not exist: apply it first (hms-node list shows the services)", ns, name)
		}
		return nil
	})
	return resp, err
}
