package dashboard

import (
	"cmp"
	"slices"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// Overview is GET api/overview, and each event of api/events: everything
// the page shows but the tap.
type Overview struct {
	GeneratedAt   time.Time   `json:"generated_at"`
	Revision      int64       `json:"revision"`
	WindowSeconds float64     `json:"window_seconds"`
	Services      []Service   `json:"services"`
	Externals     []External  `json:"externals"`
	Nodes         []Node      `json:"nodes"`
	Edges         []Edge      `json:"edges"`
	Circuits      []Circuit   `json:"circuits"`
	RateLimits    []RateLimit `json:"rate_limits"`
	Certs         []Cert      `json:"certs"`
	// Errors are problems reading the data, for a banner.
	Errors []string `json:"errors"`
}

// Service is a registry service with its instances.
type Service struct {
	ID        string     `json:"id"` // "ns/name"
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	VIP       string     `json:"vip"`
	Ports     []uint32   `json:"ports"`
	Protocol  string     `json:"protocol"`
	Version   string     `json:"version,omitempty"`
	Instances []Instance `json:"instances"`
	Healthy   int        `json:"healthy"`
}

// Instance is one endpoint of a service.
type Instance struct {
	Node    string `json:"node"`
	IP      string `json:"ip"`
	Port    uint32 `json:"port"`
	Healthy bool   `json:"healthy"`
	Version string `json:"version,omitempty"`
}

// External is a service outside the mesh.
type External struct {
	ID  string `json:"id"`
	URL string `json:"url"`
	VIP string `json:"vip"`
}

// Node is a registered node; Reporting says its agent sent stats lately.
type Node struct {
	Name         string `json:"name"`
	Address      string `json:"address"`
	AgentVersion string `json:"agent_version,omitempty"`
	Reporting    bool   `json:"reporting"`
}

// Edge states, by error rate over the window.
const (
	EdgeOK       = "ok"       // under 1% errors
	EdgeDegraded = "degraded" // 1% to 25%
	EdgeFailing  = "failing"  // 25% or more
)

// Edge is the traffic from one service to another over the last window.
type Edge struct {
	Source      string  `json:"source"`
	Destination string  `json:"destination"`
	Requests    uint64  `json:"requests"`
	Errors      uint64  `json:"errors"`
	RPS         float64 `json:"rps"`
	ErrorRate   float64 `json:"error_rate"`
	P99Ms       float64 `json:"p99_ms"`
	State       string  `json:"state"`
	// Circuit is "open" or "half-open" when some calling node's circuit
	// to Destination is not closed.
	Circuit string `json:"circuit,omitempty"`
}

// Circuit is a calling node's circuit to a destination that is not closed.
type Circuit struct {
	Node        string `json:"node"`
	Destination string `json:"destination"`
	State       string `json:"state"`
}

// RateLimit is a service's limit: set with `limit set` (source "limit"),
// which wins, or from its manifest's mesh.rate_limit (source "manifest").
type RateLimit struct {
	Service string  `json:"service"`
	RPS     float64 `json:"rps"`
	Source  string  `json:"source"`
}

// Cert is one identity's certificate on a node.
type Cert struct {
	Node        string    `json:"node"`
	Identity    string    `json:"identity"`
	Expiry      time.Time `json:"expiry"`
	SecondsLeft int64     `json:"seconds_left"`
	State       string    `json:"state"` // "ok", "expiring" (under an hour), "expired"
}

// edgeState classifies an error rate.
func edgeState(rate float64) string {
	switch {
	case rate >= 0.25:
		return EdgeFailing
	case rate >= 0.01:
		return EdgeDegraded
	}
	return EdgeOK
}

func id(ns, name string) string { return ns + "/" + name }

// build assembles the overview; reg may be nil (the registry is down).
func build(now time.Time, window time.Duration, reg *Registry, edges []*api.EdgeStats,
	circuits map[string][]*api.CircuitStatus, certs map[string][]*api.CertStatus) *Overview {
	o := &Overview{GeneratedAt: now.UTC(), WindowSeconds: window.Seconds(),
		Services: []Service{}, Externals: []External{}, Nodes: []Node{}, Edges: []Edge{},
		Circuits: []Circuit{}, RateLimits: []RateLimit{}, Certs: []Cert{}, Errors: []string{}}
	if reg != nil {
		o.Revision = reg.Revision
		o.Services, o.RateLimits = services(reg)
		for _, e := range reg.Externals {
			o.Externals = append(o.Externals, External{ID: id(e.GetNamespace(), e.GetName()), URL: e.GetUrl(), VIP: e.GetVip()})
		}
		for _, n := range reg.Nodes {
			_, circ := circuits[n.GetName()]
			_, cert := certs[n.GetName()]
			o.Nodes = append(o.Nodes, Node{Name: n.GetName(), Address: n.GetAddress(), AgentVersion: n.GetAgentVersion(), Reporting: circ || cert})
		}
	}
	open := map[string]string{}
	for node, cs := range circuits {
		for _, c := range cs {
			if c.GetState() == "" || c.GetState() == "closed" {
				continue
			}
			o.Circuits = append(o.Circuits, Circuit{Node: node, Destination: c.GetDestination(), State: c.GetState()})
			if open[c.GetDestination()] != "open" {
				open[c.GetDestination()] = c.GetState()
			}
		}
	}
	slices.SortFunc(o.Circuits, func(a, b Circuit) int {
		return cmp.Or(cmp.Compare(a.Destination, b.Destination), cmp.Compare(a.Node, b.Node))
	})
	for _, e := range edges {
		ed := Edge{Source: e.GetSource(), Destination: e.GetDestination(), Requests: e.GetRequests(), Errors: e.GetErrors(),
			RPS: float64(e.GetRequests()) / window.Seconds(), P99Ms: e.GetP99Ms(), Circuit: open[e.GetDestination()]}
		if ed.Requests > 0 {
			ed.ErrorRate = float64(min(ed.Errors, ed.Requests)) / float64(ed.Requests)
		}
		ed.State = edgeState(ed.ErrorRate)
		o.Edges = append(o.Edges, ed)
	}
	slices.SortFunc(o.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Destination, b.Destination))
	})
	o.Certs = certList(now, certs)
	return o
}

// services joins instances to their services and works out each one's
// rate limit: a RateLimit object wins over the manifest's.
func services(reg *Registry) ([]Service, []RateLimit) {
	limits := map[string]float64{}
	for _, l := range reg.Limits {
		limits[id(l.GetNamespace(), l.GetService())] = l.GetRps()
	}
	byID := map[string]*Service{}
	out := make([]Service, 0, len(reg.Services))
	var rls []RateLimit
	for _, s := range reg.Services {
		sid := id(s.GetNamespace(), s.GetName())
		out = append(out, Service{ID: sid, Namespace: s.GetNamespace(), Name: s.GetName(), VIP: s.GetVip(),
			Ports: s.GetPorts(), Protocol: cmp.Or(s.GetProtocol(), "auto"), Version: s.GetVersion(), Instances: []Instance{}})
		if rps, ok := limits[sid]; ok {
			rls = append(rls, RateLimit{Service: sid, RPS: rps, Source: "limit"})
		} else if rps := s.GetMesh().GetRateLimitRps(); rps > 0 {
			rls = append(rls, RateLimit{Service: sid, RPS: rps, Source: "manifest"})
		}
	}
	for i := range out {
		byID[out[i].ID] = &out[i]
	}
	for _, in := range reg.Instances {
		s := byID[id(in.GetNamespace(), in.GetService())]
		if s == nil {
			continue // an instance of a service deleted since
		}
		s.Instances = append(s.Instances, Instance{Node: in.GetNode(), IP: in.GetIp(), Port: in.GetPort(), Healthy: in.GetHealthy(), Version: in.GetVersion()})
		if in.GetHealthy() {
			s.Healthy++
		}
	}
	for i := range out {
		slices.SortFunc(out[i].Instances, func(a, b Instance) int {
			return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.IP, b.IP), cmp.Compare(a.Port, b.Port))
		})
	}
	slices.SortFunc(out, func(a, b Service) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(rls, func(a, b RateLimit) int { return cmp.Compare(a.Service, b.Service) })
	if rls == nil {
		rls = []RateLimit{}
	}
	return out, rls
}

// certExpiring is when a certificate counts as expiring soon.
const certExpiring = time.Hour

func certList(now time.Time, certs map[string][]*api.CertStatus) []Cert {
	out := []Cert{}
	for node, cs := range certs {
		for _, c := range cs {
			exp := time.Unix(c.GetExpiryUnix(), 0).UTC()
			left := exp.Sub(now)
			state := "ok"
			switch {
			case left <= 0:
				state = "expired"
			case left < certExpiring:
				state = "expiring"
			}
			out = append(out, Cert{Node: node, Identity: c.GetIdentity(), Expiry: exp, SecondsLeft: int64(left.Seconds()), State: state})
		}
	}
	slices.SortFunc(out, func(a, b Cert) int {
		return cmp.Or(a.Expiry.Compare(b.Expiry), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Identity, b.Identity))
	})
	return out
}
