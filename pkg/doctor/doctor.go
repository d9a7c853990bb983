package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// Config says what to check and where to look. The zero value checks this
// machine at the default paths with no control plane configured; tests
// point the paths at fakes.
type Config struct {
	// KernelRelease is the running kernel's release; default uname -r.
	KernelRelease string
	// KernelConfigs are the kernel config files tried in order (gzip when
	// the name ends in .gz); default /proc/config.gz, then
	// /boot/config-<release>.
	KernelConfigs []string
	// BTF is the kernel's BTF file; default /sys/kernel/btf/vmlinux.
	BTF string
	// MountInfo is the mount table; default /proc/self/mountinfo.
	MountInfo string
	// ProcStatus holds the capability sets; default /proc/self/status.
	ProcStatus string
	// CgroupRoot is the agent's --cgroup-root; empty: the cgroup2 mount.
	CgroupRoot string
	// BPFFS is the agent's pin directory; default /sys/fs/bpf/hms.
	BPFFS string
	// Socket is the local agent's socket; default /var/run/hms/agent.sock.
	Socket string
	// Probe asks the kernel for the program and map types the datapath
	// loads; default the datapath's own start-up probe.
	Probe func() ProbeResult
	// FSType returns the filesystem magic of path (statfs f_type);
	// default statfs(2).
	FSType func(path string) (int64, error)

	// Control is the control plane's API address, host:port; empty: the
	// address the local agent uses, if it answers.
	Control string
	// ControlTLS authenticates to the API (the admin credential); nil:
	// only a TLS handshake is tried.
	ControlTLS *tls.Config
	// ControlConfigError is why ControlTLS is nil (no client config), for
	// the report.
	ControlConfigError error
	// ControlHTTP is the control plane's HTTP listener, host:port, whose
	// Date header is compared with the local clock; empty: Control's host
	// on port 9091.
	ControlHTTP string
	// MaxSkew is the clock difference allowed; default 2s.
	MaxSkew time.Duration
	// Timeout bounds each network check; default 3s.
	Timeout time.Duration
	// Now is the local clock; default time.Now.
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultBPFFS       = "/sys/fs/bpf/hms"
	DefaultSocket      = "/var/run/hms/agent.sock"
	DefaultHTTPPort    = "9091"
	DefaultMaxSkew     = 2 * time.Second
	DefaultTimeout     = 3 * time.Second
	defaultMountInfo   = "/proc/self/mountinfo"
	defaultProcStatus  = "/proc/self/status"
	defaultBTF         = "/sys/kernel/btf/vmlinux"
	defaultKernelCfgGz = "/proc/config.gz"
)

func (c Config) withDefaults() Config {
	if c.KernelRelease == "" {
		c.KernelRelease = kernelRelease()
	}
	if c.KernelConfigs == nil {
		c.KernelConfigs = []string{defaultKernelCfgGz, "/boot/config-" + c.KernelRelease}
	}
	if c.BTF == "" {
		c.BTF = defaultBTF
	}
	if c.MountInfo == "" {
		c.MountInfo = defaultMountInfo
	}
	if c.ProcStatus == "" {
		c.ProcStatus = defaultProcStatus
	}
	if c.BPFFS == "" {
		c.BPFFS = DefaultBPFFS
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.Probe == nil {
		c.Probe = probeDatapath
	}
	if c.FSType == nil {
		c.FSType = statfsType
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = DefaultMaxSkew
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Result is one check's outcome.
type Result struct {
	// Check names what was checked, e.g. "bpffs".
	Check string `json:"check"`
	// OK is true when the check passed.
	OK bool `json:"ok"`
	// Detail is what was found.
	Detail string `json:"detail"`
	// Fix is what to do about a failed check; empty when OK.
	Fix string `json:"fix,omitempty"`
}

func pass(check, detail string) Result { return Result{Check: check, OK: true, Detail: detail} }

func fail(check, detail, fix string) Result {
	return Result{Check: check, Detail: detail, Fix: fix}
}

// Run runs every check, in a fixed order: the kernel, the mounts and
// privileges, the local agent and its pins, then the control plane.
func Run(ctx context.Context, cfg Config) []Result {
	cfg = cfg.withDefaults()
	var out []Result
	k := readKernel(cfg)
	out = append(out, checkKernelVersion(k))
	out = append(out, checkFeatures(k)...)
	out = append(out, checkCgroup2(cfg), checkBPFFS(cfg), checkCaps(cfg))
	agent, agentRes := checkAgent(ctx, cfg)
	out = append(out, agentRes, checkPins(cfg, agent))
	addr := cfg.Control
	if addr == "" && agent != nil && agent.Registry != nil {
		addr = agent.Registry.Address
	}
	out = append(out, checkControl(ctx, cfg, addr), checkClock(ctx, cfg, addr))
	return out
}

// Failed names the checks that failed.
func Failed(rs []Result) []string {
	var names []string
	for _, r := range rs {
		if !r.OK {
			names = append(names, r.Check)
		}
	}
	return names
}

// WriteText prints one line per check: OK or FAIL, the check, what was
// found and, for a failure, the fix.
func WriteText(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rs {
		word, text := "OK", r.Detail
		if !r.OK {
			word = "FAIL"
			if r.Fix != "" {
				text += "; fix: " + r.Fix
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", word, r.Check, oneLine(text))
	}
	return tw.Flush()
}

// WriteJSON prints {"ok": bool, "checks": [Result...]}.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		OK     bool     `json:"ok"`
		Checks []Result `json:"checks"`
	}{len(Failed(rs)) == 0, rs})
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// httpClient is a client bounded by the check timeout that never follows
// proxies: the checks talk to loopback or the cluster directly.
func httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil}}
}
