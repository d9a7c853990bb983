package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

const rotManifest = `service: {name: rot-svc, port: 7000}
protocol: http
health: {path: /healthz, interval: 1s}
`

// serialLog records the distinct workload certificate serials each agent
// reported, in the order they first appeared.
type serialLog struct {
	mu    sync.Mutex
	seen  map[string][]string // "<node>/<service>" -> serials
	times map[string][]time.Duration
}

func (s *serialLog) poll(a *agentProc, since time.Time) {
	st, err := a.status()
	if err != nil {
		return // a slow status call is not a data-path error
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range st.Workloads {
		k := a.node.Name + "/" + w.Service
		l := s.seen[k]
		if w.CertSerial != "" && (len(l) == 0 || l[len(l)-1] != w.CertSerial) {
			s.seen[k] = append(l, w.CertSerial)
			s.times[k] = append(s.times[k], time.Since(since).Round(time.Second))
		}
	}
}

// Under steady load in both connection styles, the workload certificates
// of both sides rotate several times (--cert-ttl 2m: every minute) and no
// request fails.
func TestPrivilegedCertRotationUnderLoad(t *testing.T) {
	testbed.RequirePrivileged(t)
	fortioBin(t) // before the clock starts: the first build takes a while
	dur := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("HMS_ROTATION_DURATION")); err == nil && d > 0 {
		dur = d
	}
	bed := testbed.New(t)
	control := newControl(t, "--cert-ttl", "2m")
	n1, n2 := bed.MustAddNode(t, "n1"), bed.MustAddNode(t, "n2")
	flags := []string{"--probe-interval", "500ms", "--dns-upstream", startFakeUpstream(t)}
	a1 := newAgent(t, n1, append(control.agentFlags(), flags...)...)
	a2 := newAgent(t, n2, append(control.agentFlags(), flags...)...)
	a1.start()
	a2.start()
	control.apply(rotManifest)
	client, server := n1.MustAddPod(t, "client"), n2.MustAddPod(t, "rot")
	startServer(t, server, 7000, testApp, "http", "--addr", ":7000", "--body", "rot-on-n2")
	a1.enroll(client, "client")
	a2.enroll(server, "rot-svc", 7000)
	waitFor(t, 15*time.Second, "rot-svc healthy", func() bool { return control.healthyInstances("rot-svc") == 1 })
	vip := serviceVIP(t, control, "rot-svc")
	url := fmt.Sprintf("http://%s:7000/ka", vip)
	waitFor(t, 10*time.Second, "a first call through the mesh", func() bool {
		out, err := curl(t, client, url)
		return err == nil && strings.Contains(out, "rot-on-n2 path=/ka")
	})

	serials := &serialLog{seen: map[string][]string{}, times: map[string][]time.Duration{}}
	start := time.Now()
	ctx := ctxT(t, dur+2*time.Minute)
	waitKA := startFortio(ctx, t, client, "-qps", "100", "-c", "2", "-t", dur.String(), url)
	loop := client.Command(ctx, testApp, "loop", "--addr", vip+":7000", "--want", "rot-on-n2 path=/loop",
		"--interval", "5ms", "--duration", dur.String())
	var loopOut strings.Builder
	loop.Stdout = &loopOut
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	for time.Since(start) < dur+time.Second {
		serials.poll(a1, start)
		serials.poll(a2, start)
		time.Sleep(3 * time.Second)
	}
	loopErr := loop.Wait()
	ka := waitKA()
	elapsed := time.Since(start)
	serials.poll(a1, start)
	serials.poll(a2, start)

	var lr struct {
		OK, Failed int
		Errors     []string
	}
	if loopErr != nil || json.Unmarshal([]byte(loopOut.String()), &lr) != nil {
		t.Fatalf("loop: %v, output %q", loopErr, loopOut.String())
	}
	t.Logf("fresh connections (hms-testapp loop --interval 5ms): %d ok, %d failed in %s = %.0f req/s achieved; errors %v",
		lr.OK, lr.Failed, dur, float64(lr.OK+lr.Failed)/dur.Seconds(), lr.Errors)
	t.Logf("keep-alive (fortio -qps 100 -c 2): %d calls, codes %v, %.1f req/s, %d sockets, p50 %.2f ms p99 %.2f ms max %.2f ms",
		ka.Duration.Count, ka.RetCodes, ka.ActualQPS, ka.SocketCount, ka.Duration.pct(50)*1e3, ka.Duration.pct(99)*1e3, ka.Duration.Max*1e3)
	rotated := countRotations(t, a1, a2)
	keys := make([]string, 0, len(serials.seen))
	for k := range serials.seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s cert serials (first seen at): %s", k, zipSerials(serials.seen[k], serials.times[k]))
	}
	t.Logf("run took %s; %s", elapsed.Round(time.Second), rotated)

	if lr.Failed != 0 || lr.OK == 0 {
		t.Errorf("fresh-connection loop: %d failed of %d: %v", lr.Failed, lr.OK+lr.Failed, lr.Errors)
	}
	if ka.non200() != 0 || ka.Duration.Count == 0 {
		t.Errorf("keep-alive load: codes %v", ka.RetCodes)
	} else {
		ka.check(t, "keep-alive load", len("rot-on-n2 path=/ka\n"))
	}
	for _, k := range []string{"n1/client", "n2/rot-svc"} {
		if n := len(serials.seen[k]); n < 3 {
			t.Errorf("%s: %d distinct certificate serials during the run, want ≥ 3 (≥ 2 rotations)", k, n)
		}
	}
	// The mesh still answers by content after the run.
	out, err := curl(t, client, url)
	if err != nil || !strings.Contains(out, "rot-on-n2 path=/ka") {
		t.Errorf("call after the run: %v %q", err, out)
	}
}

// serviceVIP is the VIP the control plane gave svc.
func serviceVIP(t testing.TB, c *controlProc, svc string) string {
	t.Helper()
	l, _ := c.list()
	for _, s := range l.Services {
		if s.Name == svc && s.VIP != "" {
			return s.VIP
		}
	}
	t.Fatalf("service %s has no VIP in list", svc)
	return ""
}

// countRotations counts "workload certificate rotated" lines in both
// agents' logs, as a cross-check of the serials seen in status.
func countRotations(t *testing.T, agents ...*agentProc) string {
	var parts []string
	for _, a := range agents {
		b, _ := os.ReadFile(filepath.Join(a.dir, "agent.log"))
		parts = append(parts, fmt.Sprintf("%s logged %d workload rotations", a.node.Name,
			strings.Count(string(b), "workload certificate rotated")))
	}
	return strings.Join(parts, ", ")
}

func zipSerials(s []string, at []time.Duration) string {
	var b strings.Builder
	for i := range s {
		fmt.Fprintf(&b, "%s (%s) ", s[i], at[i])
	}
	return b.String()
}
