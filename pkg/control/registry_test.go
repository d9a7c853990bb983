package control

import (
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestApplyCreatesWithVIPAndUpdateKeepsIt(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, _ := startServer(t, cfg)
	reg, _ := dial(t, s)

	r := apply(t, reg, svc("web", 8080))
	res := r.Results[0]
	if !res.Created || res.Service.Namespace != "default" {
		t.Fatalf("created=%v ns=%q, want created in default", res.Created, res.Service.Namespace)
	}
	vip := netip.MustParseAddr(res.Service.Vip)
	if !defaultVIPCIDR.Contains(vip) || !vipUsable(defaultVIPCIDR, vip) {
		t.Fatalf("vip %s not a usable address of %s", vip, defaultVIPCIDR)
	}
	upd := svc("web", 9090)
	upd.Version = "2"
	r2 := apply(t, reg, upd)
	if r2.Results[0].Created || r2.Results[0].Service.Vip != vip.String() {
		t.Fatalf("update: created=%v vip=%s, want created=false vip=%s", r2.Results[0].Created, r2.Results[0].Service.Vip, vip)
	}
	l := list(t, reg)
	if len(l.Services) != 1 || l.Services[0].Ports[0] != 9090 || l.Services[0].Vip != vip.String() ||
		l.Services[0].Revision != r2.Results[0].Service.Revision {
		t.Fatalf("list after update = %v", l.Services)
	}
	// Admin config for the CLI, 0600.
	ac, err := LoadAdminConfig(filepath.Join(cfg.DataDir, "admin.yaml"))
	if err != nil || ac.Control != s.Addr() || !strings.Contains(ac.CA, "BEGIN CERTIFICATE") ||
		!strings.Contains(ac.Cert, "BEGIN CERTIFICATE") || !strings.Contains(ac.Key, "BEGIN PRIVATE KEY") {
		t.Fatalf("admin.yaml = %+v, %v", ac, err)
	}
	if res.Identity != "spiffe://cluster.local/ns/default/sa/web" || res.CertTtlMs != DefaultCertTTL.Milliseconds() {
		t.Fatalf("apply result identity %q, cert ttl %dms", res.Identity, res.CertTtlMs)
	}
	if fi, _ := os.Stat(filepath.Join(cfg.DataDir, "admin.yaml")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.yaml mode %v", fi.Mode())
	}
}

func TestApplyIsOneTransaction(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	taken := apply(t, reg, svc("existing", 80)).Results[0].Service.Vip
	before := list(t, reg)

	dupVIP := svc("b", 80)
	dupVIP.Vip = taken
	noName := &api.Service{Namespace: "x", Ports: []uint32{80}}
	cases := []struct {
		name string
		svcs []*api.Service
		code codes.Code
	}{
		{"vip taken", []*api.Service{svc("a", 80), dupVIP, svc("c", 80)}, codes.AlreadyExists},
		{"no name", []*api.Service{svc("a", 80), noName, svc("c", 80)}, codes.InvalidArgument},
		{"name twice", []*api.Service{svc("a", 80), svc("a", 81)}, codes.InvalidArgument},
		{"vip out of range", []*api.Service{svc("a", 80), {Name: "d", Vip: "10.0.0.1"}}, codes.InvalidArgument},
	}
	for _, c := range cases {
		_, err := reg.Apply(ctxT(t, 10e9), &api.ApplyRequest{Services: c.svcs})
		if status.Code(err) != c.code {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.code)
		}
	}
	after := list(t, reg)
	if after.Revision != before.Revision || !proto.Equal(&api.ListResponse{Services: after.Services},
		&api.ListResponse{Services: before.Services}) {
		t.Fatalf("a failed apply wrote something: before %v\nafter %v", before, after)
	}
	// The same batch without the bad one goes in whole.
	r := apply(t, reg, svc("a", 80), svc("b", 80), svc("c", 80))
	seen := map[string]bool{taken: true}
	for _, res := range r.Results {
		if !res.Created || seen[res.Service.Vip] {
			t.Fatalf("result %v: not created or vip reused", res)
		}
		seen[res.Service.Vip] = true
	}
	if n := len(list(t, reg).Services); n != 4 {
		t.Fatalf("%d services, want 4", n)
	}
}

func TestDeleteReleasesVIP(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, _ := startServer(t, cfg)
	reg, _ := dial(t, s)
	r := apply(t, reg, svc("a", 80), svc("b", 80))
	vipA := r.Results[0].Service.Vip
	// Routes and limits of a (written by their own verbs) go with it.
	cli := etcdClient(t, "http://127.0.0.1:"+itoa(cfg.EtcdClientPort))
	for k, m := range map[string]proto.Message{
		routesPrefix("default", "a") + "x": &api.Route{Namespace: "default", Service: "a", Path: "/x"},
		rateLimitKey("default", "a"):       &api.RateLimit{Namespace: "default", Service: "a", Rps: 5},
		rateLimitKey("default", "b"):       &api.RateLimit{Namespace: "default", Service: "b", Rps: 5},
	} {
		b, _ := proto.Marshal(m)
		if _, err := cli.Put(ctxT(t, 5e9), k, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Delete(ctxT(t, 10e9), &api.DeleteRequest{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Delete(ctxT(t, 10e9), &api.DeleteRequest{Name: "a"}); status.Code(err) != codes.NotFound {
		t.Fatalf("delete unknown: %v, want NotFound", err)
	}
	if m := vips(list(t, reg)); len(m) != 1 || m["default/b"] == "" {
		t.Fatalf("after delete: %v", m)
	}
	left, err := cli.Get(ctxT(t, 5e9), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range left.Kvs {
		keys = append(keys, relKey(string(kv.Key)))
	}
	if want := []string{"ca/root", "ratelimits/default/b", "services/default/b", "vips/240.240.0.3"}; !slices.Equal(keys, want) {
		t.Fatalf("keys after delete %v, want %v", keys, want)
	}
	got := apply(t, reg, svc("c", 80)).Results[0].Service.Vip
	if got != vipA {
		t.Fatalf("new service got %s, want the released %s", got, vipA)
	}
}

func TestApplyLargeManifest(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	var svcs []*api.Service
	for i := range 3000 {
		svcs = append(svcs, svc("svc-"+itoa(i), 80))
	}
	if r := apply(t, reg, svcs...); len(r.Results) != 3000 || !r.Results[2999].Created {
		t.Fatalf("%d results", len(r.Results))
	}
	if n := len(list(t, reg).Services); n != 3000 {
		t.Fatalf("%d services listed, want 3000", n)
	}
}

func TestVIPsSurviveRestart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s, stop := startServer(t, cfg)
	reg, _ := dial(t, s)
	apply(t, reg, svc("a", 80), svc("b", 80), svc("c", 80))
	want := vips(list(t, reg))
	stop()

	s2, _ := startServer(t, cfg)
	reg2, _ := dial(t, s2)
	got := vips(list(t, reg2))
	if len(got) != 3 {
		t.Fatalf("after restart %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("after restart %s has %s, want %s", k, got[k], v)
		}
	}
	if r := apply(t, reg2, svc("a", 81)); r.Results[0].Service.Vip != want["default/a"] {
		t.Fatalf("update after restart changed the vip: %v", r.Results[0])
	}
}

func TestTwoReplicasConcurrentApplies(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	s1, _ := startServer(t, cfg)
	cfg2 := testConfig(t)
	cfg2.EtcdEndpoints = []string{"http://127.0.0.1:" + itoa(cfg.EtcdClientPort)}
	cfg2.KEKFile = filepath.Join(cfg.DataDir, "kek")
	s2, _ := startServer(t, cfg2)
	regs := []api.RegistryClient{}
	for _, s := range []*Server{s1, s2} {
		r, _ := dial(t, s)
		regs = append(regs, r)
	}
	errc := make(chan error, 100)
	for i := range 100 {
		go func() {
			_, err := regs[i%2].Apply(ctxT(t, 30e9), &api.ApplyRequest{Services: []*api.Service{svc("svc-"+itoa(i), 80)}})
			errc <- err
		}()
	}
	for range 100 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	m := vips(list(t, regs[1]))
	distinct := map[string]bool{}
	for _, v := range m {
		distinct[v] = true
	}
	if len(m) != 100 || len(distinct) != 100 {
		t.Fatalf("%d services with %d distinct vips, want 100/100", len(m), len(distinct))
	}
}

func TestAddExternal(t *testing.T) {
	t.Parallel()
	s, _ := startServer(t, testConfig(t))
	reg, _ := dial(t, s)
	svcVIP := apply(t, reg, svc("a", 80)).Results[0].Service.Vip
	r, err := reg.AddExternal(ctxT(t, 10e9), &api.AddExternalRequest{External: &api.ExternalService{Name: "pay", Url: "https://pay.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.External.Vip == "" || r.External.Vip == svcVIP {
		t.Fatalf("external vip %q (service has %s)", r.External.Vip, svcVIP)
	}
	r2, err := reg.AddExternal(ctxT(t, 10e9), &api.AddExternalRequest{External: &api.ExternalService{Name: "pay", Url: "https://pay2.example.com"}})
	if err != nil || r2.External.Vip != r.External.Vip {
		t.Fatalf("update external: %v %v", r2, err)
	}
	_, err = reg.AddExternal(ctxT(t, 10e9), &api.AddExternalRequest{External: &api.ExternalService{Name: "bad", Url: "nope"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad url: %v", err)
	}
	if l := list(t, reg); len(l.Externals) != 1 || l.Externals[0].Url != "https://pay2.example.com" {
		t.Fatalf("externals %v", l.Externals)
	}
}

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.HTTPAddr = "127.0.0.1:" + itoa(freePort(t))
	startServer(t, cfg)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + cfg.HTTPAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
	}
}
