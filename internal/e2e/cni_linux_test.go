package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hms-node/hms-node/internal/testbed"
)

// cnitoolVersion pins the CNI project's test driver.
const cnitoolVersion = "v1.3.0"

var (
	cnitoolOnce sync.Once
	cnitoolPath string
	cnitoolErr  error
	cniPodSeq   atomic.Int32
)

func cnitool(t *testing.T) string {
	t.Helper()
	cnitoolOnce.Do(func() {
		dir := filepath.Dir(hmsNode) // removed by TestMain
		cmd := exec.Command("go", "install", "github.com/containernetworking/cni/cnitool@"+cnitoolVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			cnitoolErr = fmt.Errorf("go install cnitool@%s: %v\n%s", cnitoolVersion, err, out)
		}
		cnitoolPath = filepath.Join(dir, "cnitool")
	})
	if cnitoolErr != nil {
		t.Fatal(cnitoolErr)
	}
	return cnitoolPath
}

// cniBed is a node whose pods get their network from Debian's bridge and
// host-local plugins with ours chained after them, driven by cnitool the
// way a runtime drives them. The bridge lives in the node's netns; the
// subnet exists only there; CNI's cache and IPAM state live in temp dirs.
type cniBed struct {
	t       *testing.T
	node    *testbed.Node
	agent   *agentProc
	dir     string
	confDir string
	binDir  string
	logFile string
	list    string // the conflist as written, before install
}

func newCNIBed(t *testing.T) *cniBed {
	testbed.RequirePrivileged(t)
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Fatal("Debian's containernetworking-plugins are missing: scripts/deps.sh installs them")
	}
	bed := testbed.New(t)
	b := &cniBed{t: t, node: bed.MustAddNode(t, "n1"), dir: t.TempDir()}
	b.agent = newAgent(t, b.node)
	b.agent.start()
	b.confDir, b.binDir, b.logFile = filepath.Join(b.dir, "net.d"), filepath.Join(b.dir, "bin"), filepath.Join(b.dir, "cni.log")
	for _, d := range []string{b.confDir, b.binDir, filepath.Join(b.dir, "varlib"), filepath.Join(b.dir, "ipam")} {
		os.MkdirAll(d, 0o755)
	}
	b.list = fmt.Sprintf(`{"cniVersion":"1.0.0","name":"hmse2e","plugins":[{"type":"bridge","bridge":"hmscni0","isGateway":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.249.7.0/24"}]],"dataDir":%q}}]}`, filepath.Join(b.dir, "ipam"))
	if err := os.WriteFile(filepath.Join(b.confDir, "10-hmse2e.conflist"), []byte(b.list), 0o644); err != nil {
		t.Fatal(err)
	}
	b.install()
	return b
}

// install chains hms-cni with `hms-node cni install`, as the DaemonSet's
// init container does.
func (b *cniBed) install(flags ...string) {
	b.t.Helper()
	args := append([]string{"cni", "install", "--bin-dir", b.binDir, "--conf-dir", b.confDir,
		"--socket", b.agent.socket, "--log-file", b.logFile, "--timeout", "5s"}, flags...)
	if out, err := exec.Command(hmsNode, args...).CombinedOutput(); err != nil {
		b.t.Fatalf("cni install: %v\n%s", err, out)
	}
}

// cniPod is a bare netns (CNI gives it eth0) with a cgroup of the node.
type cniPod struct {
	name, netns, cgroup string
	cniArgs             string
	cg                  *os.File
}

func (b *cniBed) pod(name, cniArgs string) *cniPod {
	b.t.Helper()
	p := &cniPod{name: name, netns: fmt.Sprintf("/run/netns/hmscni-%d-%d", os.Getpid(), cniPodSeq.Add(1)),
		cgroup: filepath.Join(b.node.CgroupDir, name), cniArgs: "IgnoreUnknown=1;" + cniArgs}
	if out, err := exec.Command("ip", "netns", "add", filepath.Base(p.netns)).CombinedOutput(); err != nil {
		b.t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	b.t.Cleanup(func() {
		b.cni("DEL", p) // idempotent; frees the address even after a failed test
		exec.Command("ip", "netns", "del", filepath.Base(p.netns)).Run()
	})
	exec.Command("ip", "-n", filepath.Base(p.netns), "link", "set", "lo", "up").Run()
	if err := os.Mkdir(p.cgroup, 0o755); err != nil { // removed with the node's cgroup tree
		b.t.Fatal(err)
	}
	var err error
	if p.cg, err = os.Open(p.cgroup); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { p.cg.Close() })
	return p
}

// cni runs cnitool in the node's netns, with /var/lib (CNI's cache) bound
// to a temp dir in a private mount namespace. It returns stdout and stderr
// together (plugins log to stderr).
func (b *cniBed) cni(verb string, p *cniPod) (string, error) {
	stdout, stderr, err := b.cniOut(verb, p)
	return stdout + stderr, err
}

func (b *cniBed) cniOut(verb string, p *cniPod) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	script := `mount --bind "$1" /var/lib && exec nsenter --net="$2" -- "$3" "$4" hmse2e "$5"`
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
		filepath.Join(b.dir, "varlib"), b.node.Netns, cnitool(b.t), strings.ToLower(verb), p.netns)
	cmd.Env = append(os.Environ(), "CNI_PATH=/usr/lib/cni:"+b.binDir, "NETCONFPATH="+b.confDir, "CNI_ARGS="+p.cniArgs)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// mustCNI runs a verb that must succeed and returns its stdout (the
// result, for ADD).
func (b *cniBed) mustCNI(verb string, p *cniPod) string {
	b.t.Helper()
	stdout, stderr, err := b.cniOut(verb, p)
	if err != nil {
		b.t.Fatalf("cnitool %s %s: %v\n%s%s", verb, p.name, err, stdout, stderr)
	}
	return stdout
}

// run runs a command in the pod: cloned into its cgroup (the datapath's
// hooks see it from the start), then into its netns.
func (p *cniPod) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + p.netns, "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: int(p.cg.Fd())}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

func addedIP(t *testing.T, out string) string {
	t.Helper()
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) == 0 || !strings.HasPrefix(res.IPs[0].Address, "10.249.7.") {
		t.Fatalf("ADD result %q (%v): want an address of the test subnet", out, err)
	}
	return strings.Split(res.IPs[0].Address, "/")[0]
}

// mapHasCookie reports whether a pinned map has an entry keyed by (or
// starting with) the netns cookie, in bpftool's JSON with or without BTF.
func mapHasCookie(t *testing.T, path string, cookie uint64) bool {
	t.Helper()
	out, err := exec.Command("bpftool", "-j", "map", "dump", "pinned", path).Output()
	if err != nil {
		t.Fatalf("bpftool map dump %s: %v", path, err)
	}
	var entries []map[string]any
	dec := json.NewDecoder(strings.NewReader(string(out)))
	dec.UseNumber() // cookies are uint64
	if err := dec.Decode(&entries); err != nil {
		t.Fatalf("bpftool output %s: %v", out, err)
	}
	for _, e := range entries {
		if f, ok := e["formatted"].(map[string]any); ok {
			e = f
		}
		switch k := e["key"].(type) {
		case json.Number:
			if k.String() == fmt.Sprint(cookie) {
				return true
			}
		case map[string]any:
			if n, ok := k["netns"].(json.Number); ok && n.String() == fmt.Sprint(cookie) {
				return true
			}
		case []any:
			var raw [8]byte
			for i := 0; i < 8 && i < len(k); i++ {
				fmt.Sscanf(fmt.Sprint(k[i]), "0x%x", &raw[i])
			}
			if binary.LittleEndian.Uint64(raw[:]) == cookie {
				return true
			}
		}
	}
	return false
}

// ADD enrolls the pod in the running agent (a call from it goes through
// the mesh), CHECK passes and then reports an enrollment broken behind the
// plugin's back, DEL leaves no listener and no map entry behind, and
// uninstall restores the conflist.
func TestPrivilegedCNIAddCheckDel(t *testing.T) {
	b := newCNIBed(t)
	server := b.pod("server", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u-web-1;HMS_SERVICE=web;HMS_PORTS=8080")
	client := b.pod("client", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cli-1;K8S_POD_UID=u-cli-1;HMS_SERVICE=cli")
	serverIP := addedIP(t, b.mustCNI("ADD", server))
	addedIP(t, b.mustCNI("ADD", client))
	app := server.command(ctxT(t, 2*time.Minute), testApp, "http", "--addr", ":8080", "--body", "hello-from-cni")
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Cancel(); app.Wait() })

	st, err := b.agent.status()
	if err != nil {
		t.Fatal(err)
	}
	var cookie uint64
	got := map[string]string{}
	for _, w := range st.Workloads {
		got[w.Netns] = fmt.Sprintf("%s/%s %v %s", w.Namespace, w.Service, w.Ports, w.IP)
		if w.Netns == server.netns {
			cookie = w.Cookie
		}
	}
	if got[server.netns] != "shop/web [8080] "+serverIP || !strings.HasPrefix(got[client.netns], "shop/cli [] ") {
		t.Fatalf("workloads after ADD: %v", got)
	}
	before := b.agent.counters()["redirected"]
	var out string
	for i := 0; i < 50; i++ { // the server may still be starting
		if out, err = runIn(t, client, "curl", "-sS", "--max-time", "5", "http://"+serverIP+":8080/cni"); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustContain(t, out, "hello-from-cni path=/cni")
	if after := b.agent.counters()["redirected"]; after <= before {
		t.Fatalf("redirected %d -> %d: the call from the CNI-added pod was not intercepted", before, after)
	}

	b.mustCNI("CHECK", client)
	if out, err := b.agent.cli("unenroll", "--netns", client.netns); err != nil {
		t.Fatalf("unenroll: %v\n%s", err, out)
	}
	out, err = b.cni("CHECK", client)
	if err == nil || !strings.Contains(out, "should be in the mesh as shop/cli but is not enrolled") {
		t.Fatalf("CHECK of a broken enrollment: err=%v\n%s", err, out)
	}

	b.mustCNI("DEL", server)
	st, _ = b.agent.status()
	for _, w := range st.Workloads {
		if w.Netns == server.netns {
			t.Fatalf("DEL left the pod enrolled: %+v", w)
		}
	}
	for _, m := range []string{"hms_pods", "hms_listeners", "hms_pod_ips", "hms_inbound_ports"} {
		if mapHasCookie(t, filepath.Join(b.agent.bpffs, m), cookie) {
			t.Errorf("%s still has an entry for the deleted pod (cookie %d)", m, cookie)
		}
	}
	if _, err := os.Stat(filepath.Join(b.agent.bpffs, fmt.Sprintf("link_sklookup_%d", cookie))); !os.IsNotExist(err) {
		t.Errorf("the pod's sk_lookup link is still pinned: %v", err)
	}
	for _, proto := range []string{"-tln", "-uln"} {
		if out, _ := runIn(t, server, "ss", "-H", proto); strings.Contains(out, ":150") {
			t.Errorf("listeners left in the deleted pod's netns (ss %s):\n%s", proto, out)
		}
	}
	b.mustCNI("DEL", server) // DEL is idempotent
	b.mustCNI("DEL", client)

	if out, err := exec.Command(hmsNode, "cni", "uninstall", "--bin-dir", b.binDir, "--conf-dir", b.confDir).CombinedOutput(); err != nil {
		t.Fatalf("cni uninstall: %v\n%s", err, out)
	}
	conf, _ := os.ReadFile(filepath.Join(b.confDir, "10-hmse2e.conflist"))
	if strings.Contains(string(conf), "hms-cni") || !strings.Contains(string(conf), `"bridge": "hmscni0"`) {
		t.Fatalf("conflist after uninstall:\n%s", conf)
	}
	if _, err := os.Stat(filepath.Join(b.binDir, "hms-cni")); !os.IsNotExist(err) {
		t.Fatalf("hms-cni still in the bin dir: %v", err)
	}
}

// With the agent down, or refusing the pod, a fail-open ADD succeeds (the
// pod starts outside the mesh, and the plugin logs why); a fail-closed one
// fails. DEL never fails.
func TestPrivilegedCNIFailOpenAndFailClosed(t *testing.T) {
	b := newCNIBed(t)
	refused := b.pod("refused", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=bad;HMS_SERVICE=bad;HMS_PORTS=0")
	addedIP(t, b.mustCNI("ADD", refused))
	b.mustCNI("DEL", refused)
	log, _ := os.ReadFile(b.logFile)
	mustContain(t, string(log), "port 0 is not a service port")
	mustContain(t, string(log), "fail-open")

	b.agent.kill()
	down := b.pod("down", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-2;HMS_SERVICE=web")
	addedIP(t, b.mustCNI("ADD", down))
	b.mustCNI("DEL", down)

	b.install("--fail-closed")
	if out, err := b.cni("ADD", down); err == nil || !strings.Contains(out, "fail-closed") {
		t.Fatalf("fail-closed ADD with the agent down: err=%v\n%s", err, out)
	}
	b.mustCNI("DEL", down) // never blocks removal, agent or not
	b.agent.start()
	if out, err := b.cni("ADD", refused); err == nil || !strings.Contains(out, "port 0 is not a service port") {
		t.Fatalf("fail-closed ADD of a pod the agent refuses: err=%v\n%s", err, out)
	}
	b.mustCNI("DEL", refused)
	ok := b.pod("ok", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-3;HMS_SERVICE=web")
	addedIP(t, b.mustCNI("ADD", ok))
	if st, err := b.agent.status(); err != nil || len(st.Workloads) != 1 || st.Workloads[0].Netns != ok.netns {
		t.Fatalf("after a fail-closed ADD the agent serves %+v (%v); want just the pod it accepted", st.Workloads, err)
	}
}

func runIn(t *testing.T, p *cniPod, name string, args ...string) (string, error) {
	t.Helper()
	out, err := p.command(ctxT(t, time.Minute), name, args...).CombinedOutput()
	return string(out), err
}
