package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/hms-node/hms-node/internal/cgroupv2"
	"github.com/hms-node/hms-node/internal/testbed"
)

// podmanEnv is one test's private containers storage and podman/buildah
// invocation: vfs (no overlay here), cgroupfs (no systemd), runc (crun
// refuses hybrid cgroup hosts like this one).
type podmanEnv struct {
	t      *testing.T
	dir    string
	image  string
	parent string // cgroup parent of our containers, removed at the end
	global []string
}

func newPodmanEnv(t *testing.T) *podmanEnv {
	for _, tool := range []string{"podman", "buildah", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install it with scripts/deps.sh", tool)
		}
	}
	runc, _ := exec.LookPath("runc")
	// podman refuses a runroot longer than 50 characters: no t.TempDir.
	dir, err := os.MkdirTemp("", "hmsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &podmanEnv{t: t, dir: dir, image: fmt.Sprintf("localhost/hms-node-e2e-%d", os.Getpid()),
		parent: fmt.Sprintf("/hmse2e-img-%d", os.Getpid())}
	e.global = []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "rr"),
		"--storage-driver", "vfs", "--tmpdir", filepath.Join(dir, "tmp"), "--cgroup-manager", "cgroupfs",
		"--runtime", runc, "--events-backend", "none"}
	left := leftovers()
	t.Cleanup(func() {
		e.podman("rm", "--all", "--force", "--time", "5")
		e.podman("rmi", "--all", "--force")
		exec.Command("buildah", "--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "rr"),
			"--storage-driver", "vfs", "rm", "--all").Run()
		removeCgroupParent(e.parent)
		for p := range leftovers() {
			if !left[p] { // made by this test's podman or buildah
				os.RemoveAll(p)
			}
		}
	})
	return e
}

// leftovers are the machine-wide paths podman and buildah create even with
// a private storage root.
func leftovers() map[string]bool {
	out := map[string]bool{}
	for _, p := range []string{"/run/containers", "/var/lib/containers", "/run/libpod"} {
		if _, err := os.Stat(p); err == nil {
			out[p] = true
		}
	}
	return out
}

func removeCgroupParent(parent string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	if mnt, err := cgroupv2.Mount(); err == nil {
		dirs = append(dirs, filepath.Join(mnt, parent))
	}
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", parent))
	for _, d := range dirs {
		exec.Command("find", d, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";").Run()
	}
}

func (e *podmanEnv) podman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", append(append([]string{}, e.global...), args...)...).CombinedOutput()
	return string(out), err
}

// build runs `make image`'s script into this test's storage.
func (e *podmanEnv) build() {
	e.t.Helper()
	start := time.Now()
	cmd := exec.Command("bash", "../../deploy/image/build.sh")
	cmd.Env = append(os.Environ(), "IMAGE="+e.image, "VERSION=e2e", "STORAGE_ROOT="+filepath.Join(e.dir, "root"),
		"STORAGE_RUNROOT="+filepath.Join(e.dir, "rr"), "STORAGE_DRIVER=vfs", "TMPDIR="+e.t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("deploy/image/build.sh: %v\n%s", err, out)
	}
	out, err := e.podman("image", "inspect", "--format", "{{.Size}} {{len .RootFS.Layers}} {{.Config.Entrypoint}}", e.image+":e2e")
	if err != nil {
		e.t.Fatalf("inspect: %v\n%s", err, out)
	}
	e.t.Logf("image built in %s: size, layers, entrypoint = %s", time.Since(start).Round(time.Second), strings.TrimSpace(out))
	if !strings.Contains(out, " 1 [/hms-node]") {
		e.t.Fatalf("want one layer from scratch with /hms-node as entrypoint, got %s", out)
	}
}

// hostPaths maps each of the DaemonSet's hostPath volumes to where this
// test keeps it: the real bpffs, cgroup2 mount and netns dir, and temp dirs
// for what the agent writes. A volume the test does not know fails it, so
// the test follows the manifest.
func hostPaths(t *testing.T, spec corev1.PodSpec, dirs map[string]string) map[string]string {
	t.Helper()
	cg, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]string{"/sys/fs/bpf": "/sys/fs/bpf", "/sys/fs/cgroup": cg, "/var/run/netns": "/run/netns"}
	out := map[string]string{}
	for _, v := range spec.Volumes {
		switch {
		case v.HostPath != nil && known[v.HostPath.Path] != "":
			out[v.Name] = known[v.HostPath.Path]
		case dirs[v.Name] != "":
			out[v.Name] = dirs[v.Name]
		default:
			t.Fatalf("volume %s (%+v): the image test does not know where to put it", v.Name, v.VolumeSource)
		}
	}
	return out
}

// runArgs is `podman run` for container c exactly as the DaemonSet runs
// it: host network, the capabilities it names (minus drop), read-only
// root, its mounts with their propagation, its env; then its expanded args
// followed by extra (later flags win).
func runArgs(t *testing.T, spec corev1.PodSpec, c corev1.Container, cm *corev1.ConfigMap, vols map[string]string,
	env map[string]string, drop corev1.Capability, extra ...string) []string {
	t.Helper()
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	// This sandbox refuses podman's default rlimits; ours are no wider.
	a := []string{"run", "--ulimit", fmt.Sprintf("nofile=%d:%d", rl.Cur, rl.Cur), "--ulimit", "nproc=4096:4096"}
	if spec.HostNetwork {
		a = append(a, "--network", "host")
	}
	sc := c.SecurityContext
	if sc.Privileged != nil && *sc.Privileged {
		t.Fatal("the DaemonSet asks for privileged: this test refuses to run it")
	}
	for _, d := range sc.Capabilities.Drop {
		a = append(a, "--cap-drop", string(d))
	}
	for _, add := range sc.Capabilities.Add {
		if add != drop {
			a = append(a, "--cap-add", string(add))
		}
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		a = append(a, "--read-only")
	}
	if p := spec.SecurityContext; p == nil || p.SeccompProfile == nil || p.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Fatal("the DaemonSet's seccomp profile is not RuntimeDefault (podman's default profile stands for it here)")
	}
	for _, m := range c.VolumeMounts {
		v := vols[m.Name] + ":" + m.MountPath
		var opts []string
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer {
			opts = append(opts, "rslave")
		}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		if len(opts) > 0 {
			v += ":" + strings.Join(opts, ",")
		}
		a = append(a, "-v", v)
	}
	for k, v := range env {
		a = append(a, "-e", k+"="+v)
	}
	args, err := expandArgs(c, cm, map[string]string{"spec.nodeName": env["NODE_NAME"]})
	if err != nil {
		t.Fatal(err)
	}
	return append(append(append(a, "--entrypoint", c.Command[0], "IMAGE"), args...), extra...)
}

func withImage(args []string, image string) []string {
	out := append([]string{}, args...)
	for i, a := range out {
		if a == "IMAGE" {
			out[i] = image
		}
	}
	return out
}

func waitReady(t *testing.T, url string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready within %s", url, within)
}

// The image, built by `make image`'s script, runs the DaemonSet's init
// container (installing the CNI plugin with no capabilities) and its agent
// container with exactly the manifest's capabilities and mounts: the agent
// attaches its programs and intercepts a pod's traffic. With any one
// capability removed it exits with the probe's message for it.
func TestPrivilegedImageRunsAsTheDaemonSetSays(t *testing.T) {
	testbed.RequirePrivileged(t)
	e := newPodmanEnv(t)
	e.build()
	image := e.image + ":e2e"
	ds, cm := agentDaemonSet(t)
	spec := ds.Spec.Template.Spec

	bed := testbed.New(t)
	n := bed.MustAddNode(t, "n1")
	client, server := n.MustAddPod(t, "client"), n.MustAddPod(t, "server")
	startServer(t, server, 8080, testApp, "http", "--addr", ":8080", "--body", "hello-from-image")

	dirs := map[string]string{}
	for _, v := range []string{"run-hms", "state", "cni-bin", "cni-conf", "join-tokens"} {
		dirs[v] = t.TempDir()
	}
	os.WriteFile(filepath.Join(dirs["cni-conf"], "10-podnet.conflist"), []byte(`{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge","bridge":"cni0"}]}`), 0o644)
	vols := hostPaths(t, spec, dirs)
	cgMount, _ := cgroupv2.Mount()
	rel, _ := filepath.Rel(cgMount, n.CgroupDir)
	agentC := container(t, spec.Containers, "agent")
	var cgArg string // this node's subtree, under where the DaemonSet mounts the cgroup2 root
	for _, m := range agentC.VolumeMounts {
		if m.Name == "cgroup" {
			cgArg = filepath.Join(m.MountPath, rel)
		}
	}
	bpffs := "/sys/fs/bpf/" + filepath.Base(n.Netns) + "-img"
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	t.Cleanup(func() { exec.Command(hmsNode, "agent", "--cleanup", "--bpffs", bpffs).Run() })
	env := map[string]string{"NODE_NAME": n.Name, "GOMEMLIMIT": fmt.Sprint(agentC.Resources.Limits.Memory().Value())}
	// The cluster-only flags are overridden: no control plane or API here,
	// and this node's own cgroup subtree, pin dir and metrics port.
	extra := []string{"--cgroup-root=" + cgArg, "--bpffs=" + bpffs, "--metrics-addr=" + metrics, "--control=", "--kube=false"}

	install := container(t, spec.InitContainers, "install-cni")
	if out, err := e.podman(withImage(runFlags(runArgs(t, spec, install, cm, vols, nil, ""), "--rm", "--cgroup-parent", e.parent), image)...); err == nil {
		t.Logf("init container: %s", strings.TrimSpace(out))
	} else {
		t.Fatalf("init container: %v\n%s", err, out)
	}
	conf, _ := os.ReadFile(filepath.Join(dirs["cni-conf"], "10-podnet.conflist"))
	if _, err := os.Stat(filepath.Join(dirs["cni-bin"], "hms-cni")); err != nil || !strings.Contains(string(conf), `"type": "hms-cni"`) {
		t.Fatalf("the init container did not install the plugin: %v\n%s", err, conf)
	}

	name := fmt.Sprintf("hmse2e-agent-%d", os.Getpid())
	run := runFlags(runArgs(t, spec, agentC, cm, vols, env, "", extra...), "-d", "--name", name, "--cgroup-parent", e.parent)
	if out, err := e.podman(withImage(run, image)...); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	waitReady(t, "http://"+metrics+"/readyz", 30*time.Second)
	a := &agentProc{t: t, node: n, dir: t.TempDir(), socket: filepath.Join(dirs["run-hms"], "agent.sock")}
	st, err := a.status()
	if err != nil {
		logs, _ := e.podman("logs", name)
		t.Fatalf("status through the container's socket: %v\n%s", err, logs)
	}
	if !strings.Contains(fmt.Sprint(st.Datapath.Attachments), "hms_connect4") || st.Datapath.PinPath != bpffs {
		t.Fatalf("attachments %v under %s", st.Datapath.Attachments, st.Datapath.PinPath)
	}
	// The pods' netns as the container sees them (/var/run/netns).
	inCtr := func(p *testbed.Pod) string { return "/var/run/netns/" + filepath.Base(p.NetnsPath) }
	for _, p := range []struct {
		pod  *testbed.Pod
		args []string
	}{{client, []string{"--service", "client"}}, {server, []string{"--service", "server", "--port", "8080"}}} {
		if out, err := a.cli(append([]string{"enroll", "--netns", inCtr(p.pod)}, p.args...)...); err != nil {
			t.Fatalf("enroll %s: %v\n%s", p.pod.Name, err, out)
		}
	}
	before := a.counters()["redirected"]
	out, err := curl(t, client, fmt.Sprintf("http://%s:8080/img", server.IP))
	if err != nil {
		t.Fatalf("curl through the containerised agent: %v\n%s", err, out)
	}
	mustContain(t, out, "hello-from-image path=/img")
	if got := a.counters()["redirected"]; got < before+1 {
		t.Fatalf("redirected %d -> %d: the call was not intercepted", before, got)
	}
	if out, err := e.podman("stop", "--time", "10", name); err != nil {
		t.Fatalf("podman stop: %v\n%s", err, out)
	}

	for _, c := range agentCaps {
		out, err := e.podman(withImage(runFlags(runArgs(t, spec, agentC, cm, vols, env, c, extra...), "--rm", "--cgroup-parent", e.parent), image)...)
		if err == nil {
			t.Fatalf("the agent ran without CAP_%s:\n%s", c, out)
		}
		mustContain(t, out, "missing privilege CAP_"+string(c))
		t.Logf("without CAP_%s: %s", c, lastLine(out))
	}
}

// runFlags puts flags right after `run`, before the image.
func runFlags(args []string, flags ...string) []string {
	return append(append([]string{args[0]}, flags...), args[1:]...)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
