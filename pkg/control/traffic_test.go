package control

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

func setLimit(reg api.RegistryClient, t *testing.T, name string, rps float64) (*api.SetLimitResponse, error) {
	return reg.SetLimit(ctxT(t, 10*time.Second), &api.SetLimitRequest{Limit: &api.RateLimit{Service: name, Rps: rps}})
}

func setRoute(reg api.RegistryClient, t *testing.T, rt *api.Route) (*api.SetRouteResponse, error) {
	return reg.SetRoute(ctxT(t, 10*time.Second), &api.SetRouteRequest{Route: rt})
}

// snapshotOf connects a fresh agent of a new node and returns the
// snapshot it gets: what agents are told of the rules.
func snapshotOf(t *testing.T, s *Server, node string) *api.Snapshot {
	t.Helper()
	a := connectAgent(t, nodeAgents(t, s, node), hello(node, 0))
	snap := a.next(5 * time.Second).GetSnapshot()
	if snap == nil {
		t.Fatal("an agent's first message is no snapshot")
	}
	a.stop()
	return snap
}

func TestTrafficLimitValidation(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	apply(t, reg, svc("notify-svc", 80))

	_, err := setLimit(reg, t, "nope", 50)
	wantCode(t, "set limit of an unknown service", err, codes.NotFound, "default/nope does not exist: apply it first")
	for _, rps := range []float64{0, -1, 2e9} {
		_, err := setLimit(reg, t, "notify-svc", rps)
		wantCode(t, fmt.Sprintf("set limit of %g rps", rps), err,
			codes.InvalidArgument, "is out of range: give a rate above 0, such as 50rps")
	}
	_, err = reg.SetLimit(ctxT(t, 10*time.Second), &api.SetLimitRequest{})
	wantCode(t, "set limit without a limit", err, codes.InvalidArgument, "no limit given")
	_, err = setLimit(reg, t, "bad name!", 5)
	wantCode(t, "set limit of a bad name", err, codes.InvalidArgument, "not a valid name")
	if snap := snapshotOf(t, s, "n1"); len(snap.Limits) != 0 {
		t.Fatalf("refused limits were stored: %v", snap.Limits)
	}
}

// A limit reaches agents (a connected one as a delta, a new one in its
// snapshot), is cleared once, and a second clear says there is none.
func TestTrafficLimitSetAndClear(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	apply(t, reg, svc("notify-svc", 80))
	a := connectAgent(t, nodeAgents(t, s, "n1"), hello("n1", 0))
	a.next(5 * time.Second) // the snapshot

	resp, err := setLimit(reg, t, "notify-svc", 50)
	if err != nil {
		t.Fatalf("set limit: %v", err)
	}
	want := &api.RateLimit{Namespace: "default", Service: "notify-svc", Rps: 50}
	if !proto.Equal(resp.Limit, want) {
		t.Fatalf("set limit answered %v, want %v", resp.Limit, want)
	}
	a.waitDelta(2*time.Second, func(d *api.Delta) bool {
		return slices.ContainsFunc(d.Changes, func(c *api.Change) bool { return !c.Deleted && proto.Equal(c.GetLimit(), want) })
	})
	if snap := snapshotOf(t, s, "n2"); len(snap.Limits) != 1 || !proto.Equal(snap.Limits[0], want) {
		t.Fatalf("snapshot limits %v, want [%v]", snap.Limits, want)
	}
	// Setting it again updates it: still one limit.
	if _, err := setLimit(reg, t, "notify-svc", 2.5); err != nil {
		t.Fatalf("set limit again: %v", err)
	}
	if snap := snapshotOf(t, s, "n3"); len(snap.Limits) != 1 || snap.Limits[0].Rps != 2.5 {
		t.Fatalf("snapshot limits after an update %v, want one of 2.5 rps", snap.Limits)
	}

	if _, err := reg.ClearLimit(ctxT(t, 10*time.Second), &api.ClearLimitRequest{Service: "notify-svc"}); err != nil {
		t.Fatalf("clear limit: %v", err)
	}
	a.waitDelta(2*time.Second, func(d *api.Delta) bool {
		return slices.ContainsFunc(d.Changes, func(c *api.Change) bool {
			return c.Deleted && c.Key == "ratelimits/default/notify-svc"
		})
	})
	if snap := snapshotOf(t, s, "n4"); len(snap.Limits) != 0 {
		t.Fatalf("snapshot limits after clear: %v", snap.Limits)
	}
	_, err = reg.ClearLimit(ctxT(t, 10*time.Second), &api.ClearLimitRequest{Service: "notify-svc"})
	wantCode(t, "second clear", err, codes.NotFound, "default/notify-svc has no rate limit")
	_, err = reg.ClearLimit(ctxT(t, 10*time.Second), &api.ClearLimitRequest{Service: "nope"})
	wantCode(t, "clear limit of an unknown service", err, codes.NotFound, "default/nope does not exist")

	// A service limited by its manifest: the clear error points there.
	limited := svc("manifest-svc", 80)
	limited.Mesh = &api.MeshPolicy{RateLimitRps: 7}
	apply(t, reg, limited)
	_, err = reg.ClearLimit(ctxT(t, 10*time.Second), &api.ClearLimitRequest{Service: "manifest-svc"})
	wantCode(t, "clear of a manifest limit", err, codes.NotFound, "mesh.rate_limit (7 rps) applies")
}

func TestTrafficRouteValidation(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	apply(t, reg, svc("slow-svc", 80))

	for _, c := range []struct {
		name string
		rt   *api.Route
		want string
	}{
		{"no timeout, no retries", &api.Route{Service: "slow-svc", Path: "/delay"}, "neither a timeout nor retries"},
		{"relative path", &api.Route{Service: "slow-svc", Path: "delay", TimeoutMs: 100}, `"delay" must start with '/'`},
		{"path with a space", &api.Route{Service: "slow-svc", Path: "/a b", TimeoutMs: 100}, "hold no spaces"},
		{"long path", &api.Route{Service: "slow-svc", Path: "/" + strings.Repeat("a", maxRoutePath), TimeoutMs: 100}, "at most 1024"},
		{"negative timeout", &api.Route{Service: "slow-svc", Path: "/x", TimeoutMs: -1}, "negative"},
		{"11 retries", &api.Route{Service: "slow-svc", Path: "/x", Retries: 11}, "retries 11 is out of range 0..10"},
	} {
		_, err := setRoute(reg, t, c.rt)
		wantCode(t, c.name, err, codes.InvalidArgument, c.want)
	}
	_, err := setRoute(reg, t, &api.Route{Service: "nope", Path: "/x", TimeoutMs: 100})
	wantCode(t, "route of an unknown service", err, codes.NotFound, "default/nope does not exist")
	if snap := snapshotOf(t, s, "n1"); len(snap.Routes) != 0 {
		t.Fatalf("refused routes were stored: %v", snap.Routes)
	}

	// Valid ones: a timeout alone, retries alone; the same path again
	// updates its route.
	for _, rt := range []*api.Route{
		{Service: "slow-svc", Path: "/delay", TimeoutMs: 3000},
		{Service: "slow-svc", Path: "/retry", Retries: 10},
		{Service: "slow-svc", Path: "/delay", TimeoutMs: 100, Retries: 2},
	} {
		if _, err := setRoute(reg, t, rt); err != nil {
			t.Fatalf("set route %v: %v", rt, err)
		}
	}
	snap := snapshotOf(t, s, "n2")
	slices.SortFunc(snap.Routes, func(a, b *api.Route) int { return strings.Compare(a.Path, b.Path) })
	want := []*api.Route{
		{Namespace: "default", Service: "slow-svc", Path: "/delay", TimeoutMs: 100, Retries: 2},
		{Namespace: "default", Service: "slow-svc", Path: "/retry", Retries: 10},
	}
	if !slices.EqualFunc(snap.Routes, want, func(a, b *api.Route) bool { return proto.Equal(a, b) }) {
		t.Fatalf("snapshot routes %v, want %v", snap.Routes, want)
	}
}

// Deleting a service removes its rules from etcd and from what agents
// get; applying it again does not bring them back.
func TestTrafficRulesGoWithTheService(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, _ := startServer(t, cfg)
	reg, _ := dial(t, s)
	apply(t, reg, svc("notify-svc", 80), svc("other-svc", 80))
	for _, name := range []string{"notify-svc", "other-svc"} {
		if _, err := setLimit(reg, t, name, 5); err != nil {
			t.Fatal(err)
		}
		if _, err := setRoute(reg, t, &api.Route{Service: name, Path: "/a/b?c%", TimeoutMs: 100}); err != nil {
			t.Fatal(err)
		}
	}
	cli := etcdClient(t, "http://127.0.0.1:"+itoa(cfg.EtcdClientPort))
	rules := func() []string {
		var keys []string
		for _, kind := range []string{kindRateLimit, kindRoute} {
			got, err := cli.Get(ctxT(t, 5*time.Second), kindPrefix(kind), clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range got.Kvs {
				keys = append(keys, relKey(string(kv.Key)))
			}
		}
		return keys
	}
	want := []string{"ratelimits/default/notify-svc", "ratelimits/default/other-svc",
		"routes/default/notify-svc/%2Fa%2Fb%3Fc%25", "routes/default/other-svc/%2Fa%2Fb%3Fc%25"}
	if got := rules(); !slices.Equal(got, want) {
		t.Fatalf("rule keys %v, want %v", got, want)
	}

	if _, err := reg.Delete(ctxT(t, 10*time.Second), &api.DeleteRequest{Name: "notify-svc"}); err != nil {
		t.Fatal(err)
	}
	if got := rules(); !slices.Equal(got, []string{want[1], want[3]}) {
		t.Fatalf("rule keys after deleting notify-svc %v, want only other-svc's", got)
	}
	apply(t, reg, svc("notify-svc", 80))
	snap := snapshotOf(t, s, "n1")
	for _, l := range snap.Limits {
		if l.Service == "notify-svc" {
			t.Fatalf("a re-applied service got its old limit back: %v", snap.Limits)
		}
	}
	for _, r := range snap.Routes {
		if r.Service == "notify-svc" {
			t.Fatalf("a re-applied service got its old route back: %v", snap.Routes)
		}
	}
	if len(snap.Limits) != 1 || len(snap.Routes) != 1 {
		t.Fatalf("other-svc's rules must stay: limits %v routes %v", snap.Limits, snap.Routes)
	}
}
