package control

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/hms-node/hms-node/pkg/api"
	"google.golang.org/protobuf/proto"
)

// Every registry key lives under prefix; the /v1/ segment versions the
// schema of the protobuf values, so a future layout can live beside it.
//
//	services/<ns>/<name>              api.Service
//	instances/<ns>/<svc>/<node>/<id>  api.Instance (under the agent stream's lease)
//	nodes/<name>                      api.Node (under the agent stream's lease)
//	externals/<ns>/<name>             api.ExternalService
//	routes/<ns>/<svc>/<id>            api.Route
//	ratelimits/<ns>/<svc>             api.RateLimit
//	vips/<ip>                         the owner's key, e.g. "services/default/web"
//	revocations/<node>                api.Revocation (permanent)
//	tokens/<id>                       "<secret hash> <expiry unix ms>" (under a lease of the token's ttl)
//	ca/root                           the CA root, sealed with the KEK (mtls.Seal)
const prefix = "/hms/v1/"

// Key kinds: the first segment after prefix.
const (
	kindService   = "services"
	kindInstance  = "instances"
	kindNode      = "nodes"
	kindExternal  = "externals"
	kindRoute     = "routes"
	kindRateLimit = "ratelimits"
	kindVIP       = "vips"
	kindRevoked   = "revocations"
	kindToken     = "tokens"
)

// caRootKey holds the sealed root, created once by the first replica.
const caRootKey = prefix + "ca/root"

const defaultNamespace = "default"

// nameRE is what a namespace, service, node or external name may be: a DNS
// label-like word, so it is safe as a key segment and in DNS names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$`)

func checkName(what, v string) error {
	if v == "" {
		return fmt.Errorf("%s is missing", what)
	}
	if !nameRE.MatchString(v) {
		return fmt.Errorf("%s %q is not a valid name (letters, digits, '-', '_', '.')", what, v)
	}
	return nil
}

func serviceKey(ns, name string) string  { return prefix + kindService + "/" + ns + "/" + name }
func externalKey(ns, name string) string { return prefix + kindExternal + "/" + ns + "/" + name }
func nodeKey(name string) string         { return prefix + kindNode + "/" + name }
func vipKey(ip string) string            { return prefix + kindVIP + "/" + ip }
func rateLimitKey(ns, svc string) string { return prefix + kindRateLimit + "/" + ns + "/" + svc }
func routesPrefix(ns, svc string) string { return prefix + kindRoute + "/" + ns + "/" + svc + "/" }
func kindPrefix(kind string) string      { return prefix + kind + "/" }
func revocationKey(node string) string   { return prefix + kindRevoked + "/" + node }
func tokenKey(id string) string          { return prefix + kindToken + "/" + id }

// instanceKey is deterministic from (ns, svc, node, workload), so the same
// workload re-registered (reconnect, agent upgrade) overwrites its key. A
// workload without an id is identified by its ip:port.
func instanceKey(in *api.Instance) string {
	id := in.GetWorkload()
	if id == "" {
		id = fmt.Sprintf("%s:%d", in.GetIp(), in.GetPort())
	}
	return prefix + kindInstance + "/" + in.GetNamespace() + "/" + in.GetService() + "/" +
		in.GetNode() + "/" + url.PathEscape(id)
}

// relKey strips prefix: the key as agents see it in a Change.
func relKey(key string) string { return strings.TrimPrefix(key, prefix) }

// keyKind returns the kind segment of a full registry key.
func keyKind(key string) string {
	kind, _, _ := strings.Cut(relKey(key), "/")
	return kind
}

// decodeChange decodes value (the object stored at key, with its etcd mod
// revision) into the object field of a Change. It returns a nil Change for
// keys that agents do not see (vips, tokens, the CA, foreign keys).
func decodeChange(key string, value []byte, modRev int64) (*api.Change, error) {
	c := &api.Change{Key: relKey(key)}
	var err error
	switch keyKind(key) {
	case kindService:
		m := &api.Service{}
		err = proto.Unmarshal(value, m)
		m.Revision = modRev
		c.Object = &api.Change_Service{Service: m}
	case kindInstance:
		m := &api.Instance{}
		err = proto.Unmarshal(value, m)
		c.Object = &api.Change_Instance{Instance: m}
	case kindNode:
		m := &api.Node{}
		err = proto.Unmarshal(value, m)
		c.Object = &api.Change_Node{Node: m}
	case kindExternal:
		m := &api.ExternalService{}
		err = proto.Unmarshal(value, m)
		m.Revision = modRev
		c.Object = &api.Change_External{External: m}
	case kindRoute:
		m := &api.Route{}
		err = proto.Unmarshal(value, m)
		c.Object = &api.Change_Route{Route: m}
	case kindRateLimit:
		m := &api.RateLimit{}
		err = proto.Unmarshal(value, m)
		c.Object = &api.Change_Limit{Limit: m}
	case kindRevoked:
		m := &api.Revocation{}
		err = proto.Unmarshal(value, m)
		c.Object = &api.Change_Revocation{Revocation: m}
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return c, nil
}
