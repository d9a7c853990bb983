package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A host process run with `hms-node dev` is a workload: registered,
// probed, reachable by name from a pod, able to call the mesh by name
// itself, and gone from the registry once it exits.
func TestPrivilegedDevModeHostProcess(t *testing.T) {
	m := newTwoNodes(t)
	m.control.apply("name: dev-svc\nport: 18090\nprotocol: http\n")
	m.control.apply(notifyManifest)
	notify := m.n1.MustAddPod(t, "notify")
	startServer(t, notify, 7000, testApp, "http", "--addr", ":7000", "--body", "notify-on-n1")
	m.a1.enroll(notify, "notify-svc", 7000)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev := exec.CommandContext(ctx, hmsNode, "dev", "--socket", m.a1.socket, "--service", "dev-svc", "--port", "18090", "--",
		testApp, "http", "--addr", "127.0.0.1:18090", "--body", "dev-on-host")
	dev.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-dev.Process.Pid, syscall.SIGKILL); dev.Wait() })
	waitFor(t, 10*time.Second, "dev-svc healthy in list", func() bool { return m.control.healthyInstances("dev-svc") == 1 })

	// A pod of the same node reaches the host process by name.
	client := m.n1.MustAddPod(t, "client")
	m.a1.enroll(client, "client")
	var out string
	var err error
	waitFor(t, 5*time.Second, "a pod to reach the dev workload", func() bool {
		out, err = m.curlByName(t, client, "http://dev-svc.svc:18090/hi")
		return err == nil
	})
	mustContain(t, out, "dev-on-host path=/hi")

	// A process under `hms-node dev` calls the mesh by name (its DNS and
	// connects are steered by its cgroup).
	waitFor(t, 10*time.Second, "notify-svc healthy", func() bool { return m.control.healthyInstances("notify-svc") == 1 })
	out2, err := exec.CommandContext(ctx, "unshare", "-m", "sh", "-c", "mount --bind "+m.resolv+" /etc/resolv.conf && exec "+
		hmsNode+" dev --socket "+m.a1.socket+" --service dev-client --port 18091 -- curl -sS --max-time 5 http://notify-svc.svc/from-host").CombinedOutput()
	if err != nil {
		t.Fatalf("dev client: %v\n%s", err, out2)
	}
	mustContain(t, string(out2), "notify-on-n1 path=/from-host")

	syscall.Kill(-dev.Process.Pid, syscall.SIGTERM)
	dev.Wait()
	waitFor(t, 5*time.Second, "dev-svc to leave list", func() bool {
		l, _ := m.control.list()
		for _, s := range l.Services {
			if s.Name == "dev-svc" && len(s.Instances) > 0 {
				return false
			}
		}
		return true
	})
	if st, _ := m.a1.status(); strings.Contains(fmt.Sprint(st.Workloads), "dev-svc") {
		t.Fatalf("dev workload still in status: %+v", st.Workloads)
	}
}
