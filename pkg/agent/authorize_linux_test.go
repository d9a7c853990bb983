package agent

import (
	"testing"

	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/api"
	mtls "github.com/hms-node/hms-node/pkg/tls"
)

// authorize is the destination's allow_from check (DESIGN §3, §6).
func TestAuthorizeAllowFrom(t *testing.T) {
	table := registry.NewTable()
	table.ApplySnapshot(&api.Snapshot{Revision: 1, Services: []*api.Service{
		{Namespace: "default", Name: "open", Vip: "240.240.0.2", Ports: []uint32{80}, Mesh: &api.MeshPolicy{AllowFromAny: true}},
		{Namespace: "default", Name: "plain", Vip: "240.240.0.3", Ports: []uint32{80}},
		{Namespace: "default", Name: "listed", Vip: "240.240.0.4", Ports: []uint32{80},
			Mesh: &api.MeshPolicy{AllowFrom: []string{"web", "ops/backup", "batch/*"}}},
	}})
	a := &Agent{table: table}
	id := func(ns, svc string) mtls.ID {
		return mtls.ID{TrustDomain: "cluster.local", Namespace: ns, Service: svc}
	}
	for _, tc := range []struct {
		dst    string
		caller mtls.ID
		ok     bool
	}{
		{"open", id("other", "x"), true},
		{"plain", id("default", "web"), true},                              // same namespace, no policy
		{"plain", id("other", "web"), false},                               // cross-namespace needs allow_from
		{"listed", id("default", "web"), true},                             // "svc" means the destination's namespace
		{"listed", id("other", "web"), false},                              // ... not any namespace's web
		{"listed", id("ops", "backup"), true},                              // ns/svc
		{"listed", id("ops", "web"), false},                                //
		{"listed", id("batch", "anything"), true},                          // ns/*
		{"listed", id("default", "intruder"), false},                       // a list replaces the same-namespace default
		{"unknown", id("default", "web"), true},                            // no manifest: the same-namespace default
		{"open", mtls.ID{TrustDomain: "cluster.local", Node: "n1"}, false}, // a node is no workload
	} {
		err := a.authorize(PodSpec{Namespace: "default", Service: tc.dst}, tc.caller)
		if (err == nil) != tc.ok {
			t.Errorf("%s from %v: err=%v, want allowed=%v", tc.dst, tc.caller, err, tc.ok)
		}
	}
}
