package doctor

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// capability is one privilege the agent needs, and what for (the
// DaemonSet grants exactly these).
type capability struct {
	bit  uint
	name string
	why  string
}

var agentCaps = []capability{
	{39, "CAP_BPF", "load BPF programs and maps"},
	{12, "CAP_NET_ADMIN", "attach cgroup, sockops and sk_lookup programs, set SO_MARK, add pod routes"},
	{21, "CAP_SYS_ADMIN", "enter pod network namespaces and mount bpffs"},
}

// effectiveCaps reads the CapEff mask of a /proc/<pid>/status file.
func effectiveCaps(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("read capabilities: CapEff %q: %w", strings.TrimSpace(v), err)
			}
			return m, nil
		}
	}
	if err := s.Err(); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return 0, fmt.Errorf("read capabilities: no CapEff line in %s", path)
}

// checkCaps checks that this process holds what the agent needs: doctor
// run where the agent runs (same user, same container) sees its limits.
func checkCaps(cfg Config) Result {
	const name = "capabilities"
	mask, err := effectiveCaps(cfg.ProcStatus)
	if err != nil {
		return fail(name, err.Error(), "run doctor on Linux with /proc mounted")
	}
	var have, missing, why []string
	for _, c := range agentCaps {
		if mask&(1<<c.bit) != 0 {
			have = append(have, c.name)
		} else {
			missing = append(missing, c.name)
			why = append(why, c.name+" to "+c.why)
		}
	}
	if len(missing) > 0 {
		return fail(name, "missing "+strings.Join(missing, ", ")+" (effective set 0x"+strconv.FormatUint(mask, 16)+")",
			"run as root, or grant "+strings.Join(missing, ", ")+" (securityContext.capabilities.add); the agent needs "+strings.Join(why, "; "))
	}
	return pass(name, strings.Join(have, " ")+" effective")
}
