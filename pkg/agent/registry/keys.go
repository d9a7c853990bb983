package registry

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/hms-node/hms-node/pkg/api"
)

// keyPrefix starts every registry key (DESIGN §5):
//
//	/hms/v1/services/<ns>/<name>
//	/hms/v1/instances/<ns>/<svc>/<node>/<id>
//	/hms/v1/externals/<ns>/<name>
//	/hms/v1/routes/<ns>/<svc>/<path>
//	/hms/v1/ratelimits/<ns>/<svc>
//	/hms/v1/nodes/<name>
const keyPrefix = "/hms/v1/"

const defaultNamespace = "default"

// Kinds of registry key, the segment after keyPrefix.
const (
	kindService  = "services"
	kindInstance = "instances"
	kindExternal = "externals"
	kindRoute    = "routes"
	kindLimit    = "ratelimits"
	kindNode     = "nodes"
)

// canonKey accepts a key with or without keyPrefix (the control plane
// strips it in Change.Key) and returns it with.
func canonKey(key string) string {
	if strings.HasPrefix(key, keyPrefix) || key == "" {
		return key
	}
	return keyPrefix + strings.TrimPrefix(key, "/")
}

// splitKey returns the kind of a registry key and at most n segments after
// it; the last segment keeps any further slashes (instance ids and route
// paths may contain them). ok is false when the key has fewer segments.
func splitKey(key string, n int) (kind string, parts []string, ok bool) {
	rest, found := strings.CutPrefix(key, keyPrefix)
	if !found {
		return "", nil, false
	}
	kind, rest, _ = strings.Cut(rest, "/")
	if n == 0 {
		return kind, nil, true
	}
	parts = strings.SplitN(rest, "/", n)
	if len(parts) < n {
		return kind, parts, false
	}
	for _, p := range parts {
		if p == "" {
			return kind, parts, false
		}
	}
	return kind, parts, true
}

func keyKind(key string) string {
	k, _, _ := splitKey(key, 0)
	return k
}

func nsOr(ns string) string {
	if ns == "" {
		return defaultNamespace
	}
	return ns
}

// instanceID is the id segment used for instances that arrive without a
// key (in a Snapshot): the workload id when set, else ip:port, path-escaped
// — the control plane's own layout, so its deletions hit directly.
// Deletions whose key was never seen fall back to matchInstanceID.
func instanceID(in *api.Instance) string {
	if in.Workload != "" {
		return in.Workload
	}
	return in.Ip + ":" + strconv.FormatUint(uint64(in.Port), 10)
}

func instanceKey(ns, svc, node, id string) string {
	return keyPrefix + kindInstance + "/" + ns + "/" + svc + "/" + node + "/" + url.PathEscape(id)
}

// matchInstanceID reports whether the id segment of a deletion key names
// ep, for the spellings a control plane is likely to use.
func matchInstanceID(ep *endpoint, id string) bool {
	w := ep.inst.Workload
	if w != "" {
		if id == w || id == strings.TrimPrefix(w, "/") {
			return true
		}
		if u, err := url.PathUnescape(id); err == nil && u == w {
			return true
		}
	}
	port := strconv.FormatUint(uint64(ep.inst.Port), 10)
	return id == ep.addr.String() || id == ep.inst.Ip+":"+port || id == ep.inst.Ip+"-"+port
}

// matchRoutePath reports whether the path segment of a route key names p.
func matchRoutePath(p, seg string) bool {
	if p == seg || p == "/"+seg || strings.TrimPrefix(p, "/") == seg {
		return true
	}
	u, err := url.PathUnescape(seg)
	return err == nil && (p == u || p == "/"+u)
}
