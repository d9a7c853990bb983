package control

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// registryService implements api.RegistryServer on the store.
type registryService struct {
	api.UnimplementedRegistryServer
	st          *store
	trustDomain string
	certTTL     time.Duration
	taps        *tapRelay
}

// Apply creates or updates every service of the request in one etcd
// transaction. The manifest parser of the CLI checks the fields; this
// checks what the registry itself depends on (names, VIPs).
func (r *registryService) Apply(ctx context.Context, req *api.ApplyRequest) (*api.ApplyResponse, error) {
	if len(req.GetServices()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "apply: no services given")
	}
	svcs := make([]*api.Service, len(req.GetServices()))
	items := make([]ownedPut, len(svcs))
	seen := map[string]int{}
	for i, in := range req.GetServices() {
		svc, err := r.normalizeService(in)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "service #%d: %v; nothing was applied", i+1, err)
		}
		id := svc.Namespace + "/" + svc.Name
		if j, dup := seen[id]; dup {
			return nil, status.Errorf(codes.InvalidArgument,
				"service %s is given twice (#%d and #%d); nothing was applied", id, j+1, i+1)
		}
		seen[id] = i
		svcs[i] = svc
		items[i] = ownedPut{key: serviceKey(svc.Namespace, svc.Name), vip: svc.Vip, value: func(vip string) ([]byte, error) {
			svc.Vip = vip
			return proto.Marshal(svc)
		}}
	}
	res, rev, err := r.st.putOwned(ctx, kindService, items)
	if err != nil {
		return nil, err
	}
	out := &api.ApplyResponse{Results: make([]*api.ApplyResult, len(svcs))}
	for i, svc := range svcs {
		svc.Vip, svc.Revision = res[i].vip, rev
		out.Results[i] = &api.ApplyResult{
			Service: svc, Created: res[i].created,
			Identity:  mtls.WorkloadID(r.trustDomain, svc.Namespace, svc.Name),
			CertTtlMs: r.certTTL.Milliseconds(),
		}
	}
	r.st.log.Info("applied services", "count", len(svcs), "revision", rev)
	return out, nil
}

// normalizeService returns a copy of in with defaults and its VIP in
// canonical form, or why it cannot be stored.
func (r *registryService) normalizeService(in *api.Service) (*api.Service, error) {
	if in == nil {
		return nil, fmt.Errorf("empty service")
	}
	svc := proto.Clone(in).(*api.Service)
	svc.Revision = 0
	if svc.Namespace == "" {
		svc.Namespace = defaultNamespace
	}
	if err := checkName("namespace", svc.Namespace); err != nil {
		return nil, err
	}
	if err := checkName("name", svc.Name); err != nil {
		return nil, err
	}
	vip, err := r.canonicalVIP(svc.Vip)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", svc.Namespace, svc.Name, err)
	}
	svc.Vip = vip
	return svc, nil
}

func (r *registryService) canonicalVIP(vip string) (string, error) {
	if vip == "" {
		return "", nil
	}
	ip, err := netip.ParseAddr(vip)
	if err != nil {
		return "", fmt.Errorf("vip %q is not an IP address", vip)
	}
	if !vipUsable(r.st.cidr, ip) {
		return "", fmt.Errorf("vip %s is not a usable address of the vip range %s", ip, r.st.cidr)
	}
	return ip.String(), nil
}

// Delete removes a service, its VIP, routes and rate limit.
func (r *registryService) Delete(ctx context.Context, req *api.DeleteRequest) (*api.DeleteResponse, error) {
	ns := req.GetNamespace()
	if ns == "" {
		ns = defaultNamespace
	}
	if err := checkName("namespace", ns); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "delete: %v", err)
	}
	if err := checkName("name", req.GetName()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "delete: %v", err)
	}
	rev, err := r.st.deleteService(ctx, ns, req.GetName())
	if err != nil {
		return nil, err
	}
	r.st.log.Info("deleted service", "namespace", ns, "name", req.GetName(), "revision", rev)
	return &api.DeleteResponse{}, nil
}

// List returns the whole registry at one revision.
func (r *registryService) List(ctx context.Context, _ *api.ListRequest) (*api.ListResponse, error) {
	v, err := r.st.readAll(ctx)
	if err != nil {
		return nil, err
	}
	v.sortServices()
	return &api.ListResponse{
		Services:  v.services,
		Instances: v.instances,
		Externals: v.externals,
		Nodes:     v.nodes,
		Revision:  v.rev,
	}, nil
}

// AddExternal creates or updates an external service; a new one gets a VIP.
func (r *registryService) AddExternal(ctx context.Context, req *api.AddExternalRequest) (*api.AddExternalResponse, error) {
	if req.GetExternal() == nil {
		return nil, status.Error(codes.InvalidArgument, "add external: no external service given")
	}
	ext := proto.Clone(req.GetExternal()).(*api.ExternalService)
	ext.Revision = 0
	if ext.Namespace == "" {
		ext.Namespace = defaultNamespace
	}
	if err := r.checkExternal(ext); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "add external: %v", err)
	}
	item := ownedPut{key: externalKey(ext.Namespace, ext.Name), vip: ext.Vip, value: func(vip string) ([]byte, error) {
		ext.Vip = vip
		return proto.Marshal(ext)
	}}
	res, rev, err := r.st.putOwned(ctx, kindExternal, []ownedPut{item})
	if err != nil {
		return nil, err
	}
	ext.Vip, ext.Revision = res[0].vip, rev
	return &api.AddExternalResponse{External: ext}, nil
}

func (r *registryService) checkExternal(ext *api.ExternalService) error {
	if err := checkName("namespace", ext.Namespace); err != nil {
		return err
	}
	if err := checkName("name", ext.Name); err != nil {
		return err
	}
	u, err := url.Parse(ext.Url)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("url %q is not an absolute URL (scheme://host[:port])", ext.Url)
	}
	vip, err := r.canonicalVIP(ext.Vip)
	ext.Vip = vip
	return err
}
