package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeEnroller records the agent calls a reconciler makes.
type fakeEnroller struct {
	mu        sync.Mutex
	enrolled  map[string]Enrollment
	calls     []string
	verifyErr error
}

func newFakeEnroller() *fakeEnroller { return &fakeEnroller{enrolled: map[string]Enrollment{}} }

func (f *fakeEnroller) Enrollments() map[string]Enrollment {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]Enrollment{}
	for k, v := range f.enrolled {
		out[k] = v
	}
	return out
}

func (f *fakeEnroller) Enroll(netns, svc, ns string, ports []uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.enrolled[netns]; ok {
		return fmt.Errorf("%s already enrolled", netns) // as the agent answers
	}
	f.enrolled[netns] = Enrollment{Service: svc, Namespace: ns, Ports: ports}
	f.calls = append(f.calls, fmt.Sprintf("enroll %s %s/%s %v", filepath.Base(netns), ns, svc, ports))
	return nil
}

func (f *fakeEnroller) Unenroll(netns string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.enrolled[netns]; !ok {
		return fmt.Errorf("%s is not enrolled", netns)
	}
	delete(f.enrolled, netns)
	f.calls = append(f.calls, "unenroll "+filepath.Base(netns))
	return nil
}

func (f *fakeEnroller) Verify(string) error { return f.verifyErr }

// takeCalls returns and clears the calls made so far.
func (f *fakeEnroller) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

// fixture is a reconciler over a fake clientset, with a directory of fake
// netns files (the reconciler only stats them; FindNetns maps IPs).
type fixture struct {
	t      *testing.T
	client *fake.Clientset
	enr    *fakeEnroller
	rec    *Reconciler
	state  string
	netns  string
	byIP   map[netip.Addr]string
}

const node = "node-a"

func newFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	return &fixture{t: t, client: fake.NewClientset(objs...), enr: newFakeEnroller(),
		state: t.TempDir(), netns: t.TempDir(), byIP: map[netip.Addr]string{}}
}

// netnsFile makes a file standing in for a pod's netns at ip.
func (f *fixture) netnsFile(name, ip string) string {
	p := filepath.Join(f.netns, name)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		f.t.Fatal(err)
	}
	f.byIP[netip.MustParseAddr(ip)] = p
	return p
}

func (f *fixture) start(cfg Config) {
	f.t.Helper()
	cfg.Node, cfg.Enroller, cfg.StateDir = node, f.enr, f.state
	if cfg.Client == nil {
		cfg.Client = f.client
	}
	cfg.FindNetns = func(ip netip.Addr) (string, error) {
		if p, ok := f.byIP[ip]; ok {
			return p, nil
		}
		return "", fmt.Errorf("no netns has %s", ip)
	}
	if cfg.Resync == 0 {
		cfg.Resync = time.Hour // only events drive these tests
	}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	rec, err := New(cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.rec = rec
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	f.t.Cleanup(func() { cancel(); <-done })
	f.eventually("informers synced", rec.Synced)
}

func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s; calls so far %v, enrolled %v", what, f.enr.calls, f.enr.Enrollments())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCalls waits until the enroller has seen exactly want (in order),
// then checks that nothing more follows for a moment.
func (f *fixture) waitCalls(want ...string) {
	f.t.Helper()
	var got []string
	f.eventually(fmt.Sprint("calls ", want), func() bool {
		got = append(got, f.enr.takeCalls()...)
		return len(got) >= len(want)
	})
	time.Sleep(100 * time.Millisecond)
	got = append(got, f.enr.takeCalls()...)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		f.t.Fatalf("enroller calls %q, want %q", got, want)
	}
}

func pod(name, nodeName, ip string, labels map[string]string, ports ...int32) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: nodeName},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	c := corev1.Container{Name: "app"}
	for _, port := range ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{ContainerPort: port})
	}
	p.Spec.Containers = []corev1.Container{c}
	return p
}

func namespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func meshed(svc string) map[string]string {
	return map[string]string{LabelMesh: "enabled", LabelService: svc}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
