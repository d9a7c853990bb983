package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// This machine's layout: cgroup v1 controllers on a tmpfs, cgroup2 beside
// them at /sys/fs/cgroup/unified.
const hybridMounts = `22 1 0:21 / /proc rw - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
46 23 0:39 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700
`

const unifiedMounts = `22 1 0:21 / /proc rw - proc proc rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
`

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeFS answers statfs with magic for the paths given, and tmpfs for the
// others.
func fakeFS(magic map[string]int64) func(string) (int64, error) {
	return func(p string) (int64, error) {
		if m, ok := magic[filepath.Clean(p)]; ok {
			return m, nil
		}
		if _, err := os.Stat(p); err != nil {
			return 0, err
		}
		return 0x01021994, nil // tmpfs
	}
}

func TestCgroup2HybridAndUnified(t *testing.T) {
	r := checkCgroup2(Config{MountInfo: writeFile(t, "mountinfo", hybridMounts)})
	if !r.OK || !strings.Contains(r.Detail, "/sys/fs/cgroup/unified (hybrid host") {
		t.Errorf("hybrid: %+v", r)
	}
	r = checkCgroup2(Config{MountInfo: writeFile(t, "mountinfo", unifiedMounts)})
	if !r.OK || !strings.Contains(r.Detail, "/sys/fs/cgroup (unified host)") {
		t.Errorf("unified: %+v", r)
	}
	r = checkCgroup2(Config{MountInfo: writeFile(t, "mountinfo", "22 1 0:21 / /proc rw - proc proc rw\n")})
	if r.OK || r.Check != "cgroup2" || !strings.Contains(r.Fix, "mount -t cgroup2") {
		t.Errorf("no cgroup2: %+v", r)
	}
}

func TestCgroup2Root(t *testing.T) {
	root := t.TempDir()
	cfg := Config{MountInfo: writeFile(t, "mountinfo", unifiedMounts), CgroupRoot: root, FSType: fakeFS(map[string]int64{root: cgroup2Magic})}
	if r := checkCgroup2(cfg); !r.OK || !strings.Contains(r.Detail, "--cgroup-root "+root+" is on it") {
		t.Errorf("cgroup root on cgroup2: %+v", r)
	}
	cfg.FSType = fakeFS(nil)
	if r := checkCgroup2(cfg); r.OK || !strings.Contains(r.Detail, "is not on cgroup2") {
		t.Errorf("cgroup root on tmpfs: %+v", r)
	}
	cfg.CgroupRoot = filepath.Join(root, "absent")
	if r := checkCgroup2(cfg); r.OK || !strings.Contains(r.Detail, "is not a directory") {
		t.Errorf("absent cgroup root: %+v", r)
	}
}

func TestBPFFS(t *testing.T) {
	bpf := t.TempDir() // stands in for /sys/fs/bpf
	pinDir := filepath.Join(bpf, "hms")
	cfg := Config{BPFFS: pinDir, FSType: fakeFS(map[string]int64{bpf: bpffsMagic, pinDir: bpffsMagic})}
	if r := checkBPFFS(cfg); !r.OK || !strings.Contains(r.Detail, "the agent creates "+pinDir) {
		t.Errorf("bpffs, pin dir not made yet: %+v", r)
	}
	os.Mkdir(pinDir, 0o700)
	if r := checkBPFFS(cfg); !r.OK || r.Detail != "pin dir "+pinDir+" is on a bpffs" {
		t.Errorf("bpffs with pin dir: %+v", r)
	}
}

// The real statfs: a temporary directory is no bpffs.
func TestBPFFSMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hms")
	r := checkBPFFS(Config{BPFFS: dir, FSType: statfsType})
	if r.OK || r.Check != "bpffs" || !strings.Contains(r.Detail, "is not on a bpffs") || !strings.Contains(r.Fix, "mount -t bpf bpf "+filepath.Dir(dir)) {
		t.Errorf("tmp dir as bpffs: %+v", r)
	}
	r = checkBPFFS(Config{BPFFS: "/nonexistent/parent/hms", FSType: statfsType})
	if r.OK || !strings.Contains(r.Detail, "no such file") {
		t.Errorf("absent parent: %+v", r)
	}
}

func TestCaps(t *testing.T) {
	all := writeFile(t, "status", "Name:\thms-node\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n")
	if r := checkCaps(Config{ProcStatus: all}); !r.OK || r.Detail != "CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN effective" {
		t.Errorf("root: %+v", r)
	}
	// CAP_NET_ADMIN only (bit 12): what a container with NET_ADMIN gets.
	some := writeFile(t, "status", "CapEff:\t0000000000001000\n")
	r := checkCaps(Config{ProcStatus: some})
	if r.OK || r.Detail != "missing CAP_BPF, CAP_SYS_ADMIN (effective set 0x1000)" || !strings.Contains(r.Fix, "grant CAP_BPF, CAP_SYS_ADMIN") {
		t.Errorf("NET_ADMIN only: %+v", r)
	}
	if r := checkCaps(Config{ProcStatus: writeFile(t, "status", "Name:\tx\n")}); r.OK || !strings.Contains(r.Detail, "no CapEff") {
		t.Errorf("no CapEff: %+v", r)
	}
}
