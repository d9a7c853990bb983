package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// healthyNode is a Config whose every check passes: fake kernel files,
// mounts and capabilities, a fake agent that owns the pins, and a fake
// control plane.
func healthyNode(t *testing.T) Config {
	bpf := t.TempDir()
	pins := filepath.Join(bpf, "hms")
	os.Mkdir(pins, 0o700)
	os.WriteFile(filepath.Join(pins, "link_connect4"), nil, 0o600)
	addr, tlsCfg := fakeControl(t)
	sock := fakeAgent(t, map[string]any{"node": "n1", "version": "dev",
		"registry": map[string]any{"address": addr, "connected": true},
		"datapath": map[string]any{"pin_path": pins}})
	return Config{
		KernelRelease: "6.18.44-fc-v857",
		KernelConfigs: []string{writeGz(t, goodConfig)},
		BTF:           writeBTF(t),
		MountInfo:     writeFile(t, "mountinfo", hybridMounts),
		ProcStatus:    writeFile(t, "status", "CapEff:\t000001ffffffffff\n"),
		BPFFS:         pins,
		Socket:        sock,
		Probe:         func() ProbeResult { return ProbeResult{} },
		FSType:        fakeFS(map[string]int64{bpf: bpffsMagic, pins: bpffsMagic}),
		ControlTLS:    tlsCfg,
		ControlHTTP:   dateServer(t, 0),
	}
}

var allChecks = []string{"kernel version", "bpf syscall", "cgroup bpf", "btf", "sockmap", "sk_lookup",
	"cgroup2", "bpffs", "capabilities", "agent socket", "leftover pins", "control plane", "clock skew"}

func TestRunHealthyNode(t *testing.T) {
	rs := Run(context.Background(), healthyNode(t))
	var names []string
	for _, r := range rs {
		names = append(names, r.Check)
		if !r.OK {
			t.Errorf("%s failed: %s; fix: %s", r.Check, r.Detail, r.Fix)
		}
	}
	if fmt.Sprint(names) != fmt.Sprint(allChecks) {
		t.Errorf("checks %q, want %q", names, allChecks)
	}
	var out bytes.Buffer
	WriteText(&out, rs)
	t.Logf("healthy node:\n%s", out.String())
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != len(allChecks) {
		t.Fatalf("%d lines for %d checks", len(lines), len(allChecks))
	}
	for i, l := range lines {
		if f := strings.Fields(l); len(f) < 2 || f[0] != "OK" || !strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(l, "OK")), allChecks[i]) {
			t.Errorf("line %d %q: want OK %s ...", i, l, allChecks[i])
		}
	}
	// The control plane's address came from the running agent.
	if d := rs[len(rs)-2].Detail; !strings.Contains(d, "answers in") {
		t.Errorf("control plane found through the agent: %q", d)
	}
}

// A node whose bpffs is not mounted at the pin dir's parent and whose
// control plane stopped: exactly those checks fail, each on one line with
// its fix; -o json says the same.
func TestRunBrokenNode(t *testing.T) {
	cfg := healthyNode(t)
	cfg.BPFFS = filepath.Join(t.TempDir(), "hms") // a tmpfs dir, no pins in it
	cfg.FSType = statfsType
	cfg.Control, cfg.ControlHTTP = closedAddr(t), closedAddr(t)
	rs := Run(context.Background(), cfg)
	failed := Failed(rs)
	// The agent's pins are elsewhere now, but this dir has none: only
	// the mount and the control plane fail.
	if want := []string{"bpffs", "control plane", "clock skew"}; fmt.Sprint(failed) != fmt.Sprint(want) {
		t.Errorf("failed %q, want %q", failed, want)
	}
	var out bytes.Buffer
	WriteText(&out, rs)
	t.Logf("broken node:\n%s", out.String())
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.HasPrefix(l, "FAIL") && !strings.Contains(l, "; fix: ") {
			t.Errorf("FAIL line without a fix: %q", l)
		}
	}
	var js struct {
		OK     bool     `json:"ok"`
		Checks []Result `json:"checks"`
	}
	out.Reset()
	WriteJSON(&out, rs)
	if err := json.Unmarshal(out.Bytes(), &js); err != nil || js.OK || len(js.Checks) != len(allChecks) || js.Checks[7].Check != "bpffs" || js.Checks[7].Fix == "" {
		t.Errorf("json %s: %v", out.String(), err)
	}
}
