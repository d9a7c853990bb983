package doctor

import (
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goodConfig builds every feature the datapath needs.
const goodConfig = `CONFIG_BPF_SYSCALL=y
CONFIG_CGROUP_BPF=y
CONFIG_DEBUG_INFO_BTF=y
CONFIG_BPF_STREAM_PARSER=y
CONFIG_NET_SOCK_MSG=y
CONFIG_INET=y
# CONFIG_TLS is not set
CONFIG_LOCALVERSION="-test"
`

// writeGz writes a fake /proc/config.gz.
func writeGz(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.Write([]byte(body))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// writeBTF writes a file with the BTF magic.
func writeBTF(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(p, []byte{0x9f, 0xeb, 1, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func kernelCfg(t *testing.T, release, config string, probe ProbeResult) Config {
	cfg := Config{KernelRelease: release, BTF: writeBTF(t), Probe: func() ProbeResult { return probe }}
	cfg.KernelConfigs = []string{filepath.Join(t.TempDir(), "missing.gz")}
	if config != "" {
		cfg.KernelConfigs = append(cfg.KernelConfigs, writeGz(t, config))
	}
	return cfg
}

// kernelResults runs the kernel checks only, by name.
func kernelResults(cfg Config) map[string]Result {
	k := readKernel(cfg)
	out := map[string]Result{}
	for _, r := range append([]Result{checkKernelVersion(k)}, checkFeatures(k)...) {
		out[r.Check] = r
	}
	return out
}

func TestParseRelease(t *testing.T) {
	for rel, want := range map[string][2]int{"6.18.44-fc-v857": {6, 18}, "5.10.0-28-amd64": {5, 10}, "5.9": {5, 9}, "6.1rc2": {6, 1}} {
		ma, mi, err := parseRelease(rel)
		if err != nil || ma != want[0] || mi != want[1] {
			t.Errorf("parseRelease(%q) = %d, %d, %v; want %v", rel, ma, mi, err, want)
		}
	}
	if _, _, err := parseRelease("linux"); err == nil {
		t.Error("parseRelease(linux) succeeded")
	}
}

func TestReadKernelConfigGzipAndPlain(t *testing.T) {
	gz := writeGz(t, goodConfig)
	plain := filepath.Join(t.TempDir(), "config-6.1")
	os.WriteFile(plain, []byte(goodConfig), 0o644)
	for _, p := range []string{gz, plain} {
		m, err := readKernelConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		if m["CONFIG_CGROUP_BPF"] != "y" || m["CONFIG_TLS"] != "n" || m["CONFIG_LOCALVERSION"] != "-test" {
			t.Errorf("%s: parsed %v", p, m)
		}
	}
}

func TestKernelHealthy(t *testing.T) {
	rs := kernelResults(kernelCfg(t, "6.18.44-fc-v857", goodConfig, ProbeResult{}))
	for _, name := range []string{"kernel version", "bpf syscall", "cgroup bpf", "btf", "sockmap", "sk_lookup"} {
		r, ok := rs[name]
		if !ok || !r.OK {
			t.Errorf("%s: %+v, want OK", name, r)
		}
	}
	if d := rs["cgroup bpf"].Detail; !strings.Contains(d, "CONFIG_CGROUP_BPF=y in ") || !strings.Contains(d, "the probe loads it") {
		t.Errorf("cgroup bpf detail %q: want the config option and the probe", d)
	}
}

func TestKernelConfigMissingOption(t *testing.T) {
	config := strings.Replace(goodConfig, "CONFIG_CGROUP_BPF=y", "# CONFIG_CGROUP_BPF is not set", 1)
	config = strings.Replace(config, "CONFIG_NET_SOCK_MSG=y\n", "", 1)
	rs := kernelResults(kernelCfg(t, "6.1.0", config, ProbeResult{}))
	if r := rs["cgroup bpf"]; r.OK || !strings.Contains(r.Detail, "CONFIG_CGROUP_BPF is n") || !strings.Contains(r.Fix, "CONFIG_CGROUP_BPF=y") {
		t.Errorf("cgroup bpf: %+v", r)
	}
	if r := rs["sockmap"]; r.OK || !strings.Contains(r.Detail, "CONFIG_NET_SOCK_MSG is absent") {
		t.Errorf("sockmap: %+v", r)
	}
	if !rs["bpf syscall"].OK || !rs["sk_lookup"].OK {
		t.Errorf("only cgroup bpf and sockmap should fail: %+v", rs)
	}
}

func TestKernelTooOld(t *testing.T) {
	rs := kernelResults(kernelCfg(t, "5.4.0-150-generic", goodConfig, ProbeResult{}))
	if r := rs["kernel version"]; r.OK || !strings.Contains(r.Fix, "5.10") {
		t.Errorf("kernel version: %+v", r)
	}
	if r := rs["sk_lookup"]; r.OK || !strings.Contains(r.Detail, "5.9") {
		t.Errorf("sk_lookup on 5.4: %+v", r)
	}
}

func TestKernelProbeRefusal(t *testing.T) {
	probe := ProbeResult{Missing: []Missing{{Feature: "sk_lookup programs (kernel 5.9+)", Fix: "run on a kernel built with it"}}}
	rs := kernelResults(kernelCfg(t, "6.1.0", goodConfig, probe))
	if r := rs["sk_lookup"]; r.OK || !strings.Contains(r.Detail, "refused sk_lookup programs") || r.Fix != "run on a kernel built with it" {
		t.Errorf("sk_lookup: %+v", r)
	}
	if !rs["cgroup bpf"].OK {
		t.Errorf("cgroup bpf: %+v", rs["cgroup bpf"])
	}
}

func TestKernelNoBTF(t *testing.T) {
	cfg := kernelCfg(t, "6.1.0", goodConfig, ProbeResult{})
	cfg.BTF = filepath.Join(t.TempDir(), "vmlinux") // absent
	if r := kernelResults(cfg)["btf"]; r.OK || !strings.Contains(r.Detail, "no kernel BTF") || !strings.Contains(r.Fix, "CONFIG_DEBUG_INFO_BTF=y") {
		t.Errorf("btf: %+v", r)
	}
	os.WriteFile(cfg.BTF, []byte("ELF!"), 0o644)
	if r := kernelResults(cfg)["btf"]; r.OK || !strings.Contains(r.Detail, "is not BTF") {
		t.Errorf("btf with a non-BTF file: %+v", r)
	}
}

// Without a config file the probe vouches; without either, nothing does.
func TestKernelNoConfig(t *testing.T) {
	rs := kernelResults(kernelCfg(t, "6.1.0", "", ProbeResult{}))
	if r := rs["cgroup bpf"]; !r.OK || r.Detail != "the probe loads it" {
		t.Errorf("cgroup bpf probed without config: %+v", r)
	}
	rs = kernelResults(kernelCfg(t, "6.1.0", "", ProbeResult{Skipped: "needs CAP_BPF"}))
	if r := rs["cgroup bpf"]; r.OK || !strings.Contains(r.Detail, "not probed: needs CAP_BPF") || !strings.Contains(r.Fix, "root") {
		t.Errorf("cgroup bpf with neither config nor probe: %+v", r)
	}
	// With a config but no privileges, the config vouches and says so.
	rs = kernelResults(kernelCfg(t, "6.1.0", goodConfig, ProbeResult{Skipped: "needs CAP_BPF"}))
	if r := rs["sockmap"]; !r.OK || !strings.Contains(r.Detail, "not probed: needs CAP_BPF") {
		t.Errorf("sockmap from config only: %+v", r)
	}
}
