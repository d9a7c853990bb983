package control

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const debianEtcd = "/usr/bin/etcd"

// etcdMember is one process of a real etcd cluster, on loopback.
type etcdMember struct {
	t            *testing.T
	name, dir    string
	client, peer string // URLs
	args         []string
	cmd          *exec.Cmd
	exited       chan struct{}
}

// startEtcdCluster starts n members of Debian's etcd in temp dirs; every
// process is killed when the test ends, whatever happens.
func startEtcdCluster(t *testing.T, n int) []*etcdMember {
	ms := make([]*etcdMember, n)
	var initial []string
	for i := range ms {
		ms[i] = &etcdMember{t: t, name: fmt.Sprintf("m%d", i), dir: t.TempDir(),
			client: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
			peer:   fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
		initial = append(initial, ms[i].name+"="+ms[i].peer)
	}
	for _, m := range ms {
		m.args = []string{
			"--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "hms-test", "--listen-metrics-urls", "",
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--max-txn-ops", "16384", "--max-request-bytes", "33554432",
			"--logger", "zap", "--log-level", "warn",
		}
		m.start()
		t.Cleanup(m.kill)
	}
	return ms
}

func (m *etcdMember) start() {
	m.t.Helper()
	log, err := os.OpenFile(filepath.Join(m.dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		m.t.Fatal(err)
	}
	defer log.Close()
	m.cmd = exec.Command(debianEtcd, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start etcd %s: %v", m.name, err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(m.cmd, m.exited)
}

// kill SIGKILLs the member (a crash) and waits until it is gone.
func (m *etcdMember) kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
	if m.t.Failed() {
		if b, err := os.ReadFile(filepath.Join(m.dir, "etcd.log")); err == nil {
			m.t.Logf("etcd %s log (tail):\n%s", m.name, tail(string(b), 2000))
		}
	}
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

func clientURLs(ms []*etcdMember) []string {
	var urls []string
	for _, m := range ms {
		urls = append(urls, m.client)
	}
	return urls
}

// leaderIndex waits for a leader among the live members and returns it.
func leaderIndex(t *testing.T, ms []*etcdMember) int {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: clientURLs(ms), DialTimeout: 2 * time.Second,
		Logger: zapLogger(testLogger(), zapcore.ErrorLevel, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for i, m := range ms {
			if m.cmd == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			st, err := cli.Status(ctx, m.client)
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no etcd leader after 20s")
	return -1
}

func TestPrivilegedEtcdCluster(t *testing.T) {
	if os.Getenv("HMS_TEST_PRIVILEGED") != "1" || os.Geteuid() != 0 {
		t.Skip("privileged test: set HMS_TEST_PRIVILEGED=1 and run as root")
	}
	if _, err := os.Stat(debianEtcd); err != nil {
		if os.Getenv("CI") == "true" { // scripts/deps.sh installs it: a skip in CI would hide a broken install
			t.Fatalf("needs Debian's etcd-server at %s: %v", debianEtcd, err)
		}
		t.Skipf("needs Debian's etcd-server at %s (apt-get install etcd-server): %v", debianEtcd, err)
	}
	ms := startEtcdCluster(t, 3)
	leaderIndex(t, ms)
	cfg := testConfig(t)
	cfg.EtcdEndpoints = clientURLs(ms)
	cfg.RequestTimeout = 3 * time.Second
	s, _ := startServer(t, cfg)
	reg, _ := dial(t, s)
	apply(t, reg, svc("a", 80))

	leader := leaderIndex(t, ms)
	ms[leader].kill()
	t.Logf("killed the leader %s", ms[leader].name)
	apply(t, reg, svc("b", 80)) // the store rides out the election
	if n := len(list(t, reg).Services); n != 2 {
		t.Fatalf("%d services with one member down, want 2", n)
	}
	want := vips(list(t, reg))

	second := (leader + 1) % 3
	ms[second].kill()
	t.Logf("killed %s too: no quorum", ms[second].name)
	expectUnavailable(t, cfg.RequestTimeout, "apply", func(ctx context.Context) error {
		_, err := reg.Apply(ctx, &api.ApplyRequest{Services: []*api.Service{svc("c", 80)}})
		return err
	}, "nothing was written")
	expectUnavailable(t, cfg.RequestTimeout, "list", func(ctx context.Context) error {
		_, err := reg.List(ctx, &api.ListRequest{})
		return err
	}, "retry when etcd is back")

	ms[leader].start()
	ms[second].start()
	leaderIndex(t, ms)
	eventually(t, 15*time.Second, "apply works again after quorum is back", func() bool {
		_, err := reg.Apply(ctxT(t, 5*time.Second), &api.ApplyRequest{Services: []*api.Service{svc("c", 80)}})
		return err == nil
	})
	got := vips(list(t, reg))
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("after recovery %s has vip %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != 3 || got["default/c"] == "" {
		t.Fatalf("after recovery: %v", got)
	}
}

// expectUnavailable checks that call fails with codes.Unavailable, a clear
// message containing hint, within the request timeout (plus scheduling slack).
func expectUnavailable(t *testing.T, timeout time.Duration, what string, call func(context.Context) error, hint string) {
	t.Helper()
	start := time.Now()
	err := call(ctxT(t, 4*timeout))
	took := time.Since(start)
	st, _ := status.FromError(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "registry store unavailable (etcd: ") ||
		!strings.Contains(st.Message(), hint) {
		t.Fatalf("%s without quorum: %v, want Unavailable with a clear message", what, err)
	}
	if took > timeout+time.Second {
		t.Fatalf("%s without quorum took %s, want within the request timeout %s", what, took, timeout)
	}
	t.Logf("%s without quorum failed after %s: %s", what, took.Round(time.Millisecond), st.Message())
}
