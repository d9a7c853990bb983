package doctor

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ProbeResult is the kernel's answer to loading the program and map types
// the datapath needs.
type ProbeResult struct {
	// Skipped says why nothing was probed (no privileges); empty when
	// the probe ran.
	Skipped string
	// Missing is what the probe found missing.
	Missing []Missing
}

// Missing is one feature the probe found missing, as the datapath names
// it ("sk_lookup programs (kernel 5.9+)"), and the fix it gives.
type Missing struct {
	Feature string
	Fix     string
}

// Kernel versions the datapath needs: sk_lookup and bpf_sk_assign came in
// 5.9; 5.10 is the oldest long-term kernel with every hook.
const (
	minKernelMajor, minKernelMinor = 5, 10
)

// kernel is what the checks know of the running kernel.
type kernel struct {
	release      string
	major, minor int
	versionErr   error
	config       map[string]string // nil when no config file was readable
	configSource string            // the file config came from
	configErr    string            // why config is nil
	probe        ProbeResult
	btf          string
}

func readKernel(cfg Config) *kernel {
	k := &kernel{release: cfg.KernelRelease, btf: cfg.BTF}
	k.major, k.minor, k.versionErr = parseRelease(cfg.KernelRelease)
	var tried []string
	for _, p := range cfg.KernelConfigs {
		m, err := readKernelConfig(p)
		if err == nil {
			k.config, k.configSource = m, p
			break
		}
		tried = append(tried, err.Error())
	}
	if k.config == nil {
		k.configErr = "no kernel config readable (" + strings.Join(tried, "; ") + ")"
	}
	k.probe = cfg.Probe()
	return k
}

// parseRelease reads "6.18.44-fc-v857" as 6, 18.
func parseRelease(rel string) (major, minor int, err error) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("kernel release %q is not MAJOR.MINOR...", rel)
	}
	major, err = strconv.Atoi(parts[0])
	if err != nil {
		return 0, 0, fmt.Errorf("kernel release %q: %w", rel, err)
	}
	end := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(parts[1])
	}
	minor, err = strconv.Atoi(parts[1][:end])
	if err != nil {
		return 0, 0, fmt.Errorf("kernel release %q: %w", rel, err)
	}
	return major, minor, nil
}

func (k *kernel) atLeast(major, minor int) bool {
	return k.versionErr == nil && (k.major > major || k.major == major && k.minor >= minor)
}

// readKernelConfig parses a kernel .config: CONFIG_X=value lines, and
// "# CONFIG_X is not set" as "n".
func readKernelConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	m := map[string]string{}
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if name, ok := strings.CutPrefix(line, "# "); ok {
			if name, ok = strings.CutSuffix(name, " is not set"); ok {
				m[name] = "n"
			}
			continue
		}
		if name, val, ok := strings.Cut(line, "="); ok && strings.HasPrefix(name, "CONFIG_") {
			m[name] = strings.Trim(val, `"`)
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("%s: no CONFIG_ lines", path)
	}
	return m, nil
}

func checkKernelVersion(k *kernel) Result {
	const name = "kernel version"
	want := fmt.Sprintf("%d.%d or newer needed", minKernelMajor, minKernelMinor)
	switch {
	case k.versionErr != nil:
		return fail(name, k.versionErr.Error(), "run on Linux "+want)
	case !k.atLeast(minKernelMajor, minKernelMinor):
		return fail(name, fmt.Sprintf("%s is too old (%s: sk_lookup, bpf_sk_assign, cgroup BPF links)", k.release, want),
			fmt.Sprintf("upgrade the kernel to %d.%d or newer (5.15+ recommended)", minKernelMajor, minKernelMinor))
	}
	return pass(name, fmt.Sprintf("%s (%s)", k.release, want))
}

// feature is one kernel capability the datapath needs: the config options
// that build it, the datapath probe's names for it, and the oldest kernel
// that has it.
type feature struct {
	check   string
	options []string
	probe   []string // substrings of the probe's Missing.Feature
	major   int
	minor   int
	file    string // a file that must exist (BTF)
	why     string
}

func kernelFeatures(btf string) []feature {
	return []feature{
		{check: "bpf syscall", options: []string{"CONFIG_BPF_SYSCALL"}, probe: []string{"socket storage"},
			why: "every program and map is loaded through it"},
		{check: "cgroup bpf", options: []string{"CONFIG_CGROUP_BPF"}, probe: []string{"cgroup sock_addr", "sockops"},
			why: "connect4/6, sendmsg, recvmsg and sockops attach to a cgroup"},
		{check: "btf", options: []string{"CONFIG_DEBUG_INFO_BTF"}, file: btf,
			why: "the programs' CO-RE relocations read the kernel's BTF"},
		{check: "sockmap", options: []string{"CONFIG_BPF_STREAM_PARSER", "CONFIG_NET_SOCK_MSG"}, probe: []string{"sk_msg", "sockhash"},
			why: "sk_msg and the sockhash short-circuit the in-pod hop"},
		{check: "sk_lookup", options: []string{"CONFIG_INET"}, probe: []string{"sk_lookup"}, major: 5, minor: 9,
			why: "inbound steering to the in-pod listener"},
	}
}

func checkFeatures(k *kernel) []Result {
	var out []Result
	for _, f := range kernelFeatures(k.btf) {
		out = append(out, checkFeature(k, f))
	}
	return out
}

// checkFeature passes when the config (if readable) builds the feature,
// the kernel is new enough, its file (if any) is there, and the probe (if
// it ran) found it. Without a config file and without a probe nothing
// vouches for it: that fails.
func checkFeature(k *kernel, f feature) Result {
	fix := fmt.Sprintf("run a kernel built with %s=y (%s)", strings.Join(f.options, "=y, "), f.why)
	if f.major > 0 && !k.atLeast(f.major, f.minor) {
		return fail(f.check, fmt.Sprintf("needs kernel %d.%d+, running %s", f.major, f.minor, k.release),
			fmt.Sprintf("upgrade the kernel to %d.%d or newer", f.major, f.minor))
	}
	var found []string
	if k.config != nil {
		for _, o := range f.options {
			v := k.config[o]
			if v != "y" && v != "m" {
				if v == "" {
					v = "absent"
				}
				return fail(f.check, fmt.Sprintf("%s is %s in %s", o, v, k.configSource), fix)
			}
			found = append(found, o+"="+v)
		}
		found[len(found)-1] += " in " + k.configSource
	}
	if f.file != "" {
		if err := checkBTFFile(f.file); err != nil {
			return fail(f.check, err.Error(), fix)
		}
		found = append(found, f.file+" present")
	}
	for _, m := range k.probe.Missing {
		for _, p := range f.probe {
			if strings.Contains(m.Feature, p) {
				return fail(f.check, "the kernel refused "+m.Feature, m.Fix)
			}
		}
	}
	if len(f.probe) > 0 {
		if k.probe.Skipped == "" {
			found = append(found, "the probe loads it")
		} else if k.config == nil {
			return fail(f.check, k.configErr+", and not probed: "+k.probe.Skipped,
				"run doctor as root, or expose the kernel config (modprobe configs for /proc/config.gz)")
		} else {
			found = append(found, "not probed: "+k.probe.Skipped)
		}
	}
	if len(found) == 0 {
		return fail(f.check, k.configErr, "expose the kernel config (modprobe configs for /proc/config.gz)")
	}
	return pass(f.check, strings.Join(found, ", "))
}

// checkBTFFile checks that path holds raw BTF (magic 0xeB9F).
func checkBTFFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("no kernel BTF: %w", err)
	}
	defer f.Close()
	var magic [2]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return fmt.Errorf("read kernel BTF %s: %w", path, err)
	}
	if magic != [2]byte{0x9f, 0xeb} && magic != [2]byte{0xeb, 0x9f} {
		return fmt.Errorf("%s is not BTF (magic %x)", path, magic)
	}
	return nil
}
