package kube_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/hms-node/hms-node/internal/testbed"
	"github.com/hms-node/hms-node/pkg/agent"
	"github.com/hms-node/hms-node/pkg/agent/kube"
	"github.com/hms-node/hms-node/pkg/datapath"
)

var testApp string // built by TestMain for privileged runs

func TestMain(m *testing.M) {
	if os.Getenv("HMS_TEST_PRIVILEGED") != "1" || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "hms-kube-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testApp = filepath.Join(dir, "hms-testapp")
	if out, err := exec.Command("go", "build", "-o", testApp, "../../../internal/testapp/cmd/hms-testapp").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hms-testapp: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// netnsDir holds bind mounts of this test's pod namespaces only: the
// machine's /run/netns has other tests' pods, at the same addresses.
func netnsDir(t *testing.T, pods ...*testbed.Pod) string {
	dir := t.TempDir()
	for _, p := range pods {
		dst := filepath.Join(dir, filepath.Base(p.NetnsPath))
		if err := os.WriteFile(dst, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount(p.NetnsPath, dst, "", syscall.MS_BIND, ""); err != nil {
			t.Fatalf("bind %s: %v", p.NetnsPath, err)
		}
		t.Cleanup(func() { syscall.Unmount(dst, syscall.MNT_DETACH) })
	}
	return dir
}

func k8sPod(p *testbed.Pod, labels map[string]string, port int32) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: "shop", UID: types.UID("uid-" + p.Name), Labels: labels},
		Spec: corev1.PodSpec{NodeName: p.Node.Name, Containers: []corev1.Container{{Name: "app",
			Ports: []corev1.ContainerPort{{ContainerPort: port}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String()},
	}
}

// A real agent with the informer path on client-go's fake clientset: the
// pods that ran before it are found (by IP, among the runtime's
// namespaces) and enrolled at start-up; a connection established before
// goes on unharmed, new connections go through the agent; a label change
// takes a pod out of the mesh.
func TestPrivilegedKubeAgentEnrollsRunningPodsWithoutReset(t *testing.T) {
	testbed.RequirePrivileged(t)
	bed := testbed.New(t)
	n := bed.MustAddNode(t, "n1")
	client, server := n.MustAddPod(t, "client"), n.MustAddPod(t, "server")
	if _, err := server.Start(context.Background(), testApp, "echo", "--addr", ":7000"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// 300 round trips 10 ms apart: this connection spans the agent's start.
	long := client.Command(ctx, testApp, "rr", "--addr", server.IP.String()+":7000", "--n", "300", "--pause", "10ms")
	var longOut strings.Builder
	long.Stdout, long.Stderr = &longOut, &longOut
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	kc := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{kube.LabelMesh: "enabled"}}},
		k8sPod(client, map[string]string{kube.LabelService: "cli"}, 0),
		k8sPod(server, map[string]string{kube.LabelService: "echo"}, 7000))
	bpffs := "/sys/fs/bpf/" + filepath.Base(n.Netns) + "-kube"
	logBuf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", logBuf.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logBuf, nil))
	dp, err := datapath.Open(datapath.Config{BPFFS: bpffs, CgroupRoot: n.CgroupDir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close(); datapath.Cleanup(bpffs) })
	dir, nsDir := t.TempDir(), netnsDir(t, client, server)
	// The agent finds the pods under its NetnsDir, as in a DaemonSet.
	clientNS, serverNS := filepath.Join(nsDir, filepath.Base(client.NetnsPath)), filepath.Join(nsDir, filepath.Base(server.NetnsPath))
	a, err := agent.New(agent.Config{Node: "n1", StateDir: dir, Socket: filepath.Join(dir, "agent.sock"), MetricsAddr: "off",
		Kube: kc, NetnsDir: nsDir, Log: log}, dp)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	actx, stop := context.WithCancel(context.Background())
	go func() { done <- a.Run(actx) }()
	t.Cleanup(func() { stop(); <-done })

	workloads := func() map[string]string {
		st, err := a.Status()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, w := range st.Workloads {
			out[w.Netns] = fmt.Sprintf("%s/%s %v", w.Namespace, w.Service, w.Ports)
		}
		return out
	}
	waitFor(t, "both pods enrolled", func() bool {
		w := workloads()
		return w[clientNS] == "shop/cli []" && w[serverNS] == "shop/echo [7000]"
	})
	if err := long.Wait(); err != nil || !strings.Contains(longOut.String(), `"count":300`) {
		t.Fatalf("the connection established before enrollment: %v\n%s", err, longOut.String())
	}
	redirected := func() uint64 { st, _ := a.Status(); return st.Datapath.Counters["redirected"] }
	before := redirected()
	if out, err := client.Run(ctx, testApp, "rr", "--addr", server.IP.String()+":7000", "--n", "3"); err != nil {
		t.Fatalf("a new connection after enrollment: %v\n%s", err, out)
	}
	if after := redirected(); after != before+1 {
		t.Fatalf("redirected %d -> %d: the new connection did not go through the agent", before, after)
	}

	p, _ := kc.CoreV1().Pods("shop").Get(ctx, "client", metav1.GetOptions{})
	p.Labels[kube.LabelMesh] = "disabled"
	if _, err := kc.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the relabelled pod out of the mesh", func() bool { _, in := workloads()[clientNS]; return !in })
	if _, in := workloads()[serverNS]; !in {
		t.Fatal("relabelling one pod took another out")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer keeps the agent's log for a failing test; the agent's
// goroutines write to it concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
