package doctor

import (
	"errors"
	"fmt"
	"github.com/hms-node/hms-node/internal/cgroupv2"
	"io/fs"
	"os"
	"path/filepath"
)

// Filesystem magics (statfs f_type).
const (
	bpffsMagic   = 0xcafe4a11
	cgroup2Magic = 0x63677270
)

// checkCgroup2 finds the cgroup2 mount the agent attaches to: /sys/fs/cgroup
// on unified hosts, /sys/fs/cgroup/unified on hybrid ones; and, with
// --cgroup-root, that the root is a directory on it.
func checkCgroup2(cfg Config) Result {
	const name = "cgroup2"
	mounts, err := cgroupv2.Mounts(cfg.MountInfo)
	if err != nil {
		return fail(name, err.Error(), "run doctor on the node itself (it reads "+cfg.MountInfo+")")
	}
	var points []string
	hybrid := false
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			points = append(points, m.Point)
		case "cgroup":
			hybrid = true
		}
	}
	if len(points) == 0 {
		return fail(name, "no cgroup2 filesystem is mounted",
			"mount one (mount -t cgroup2 none /sys/fs/cgroup/unified), or boot with systemd.unified_cgroup_hierarchy=1")
	}
	layout := "unified host"
	if hybrid {
		layout = "hybrid host, cgroup v1 controllers beside it"
	}
	detail := fmt.Sprintf("mounted at %s (%s)", points[0], layout)
	if cfg.CgroupRoot == "" {
		return pass(name, detail+"; the agent attaches there")
	}
	st, err := os.Stat(cfg.CgroupRoot)
	if err != nil || !st.IsDir() {
		return fail(name, fmt.Sprintf("--cgroup-root %s is not a directory (%v)", cfg.CgroupRoot, err),
			"pass a directory of the cgroup2 mount "+points[0]+" as --cgroup-root")
	}
	if t, err := cfg.FSType(cfg.CgroupRoot); err != nil || t != cgroup2Magic {
		return fail(name, fmt.Sprintf("--cgroup-root %s is not on cgroup2 (filesystem 0x%x, %v)", cfg.CgroupRoot, t, err),
			"pass a directory of the cgroup2 mount "+points[0]+" as --cgroup-root")
	}
	return pass(name, detail+"; --cgroup-root "+cfg.CgroupRoot+" is on it")
}

// checkBPFFS checks that the pin directory is (or would be created) inside
// a mounted bpffs: pins outlive an agent restart only there.
func checkBPFFS(cfg Config) Result {
	const name = "bpffs"
	dir := cfg.BPFFS
	at := dir
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		at = filepath.Dir(dir) // the agent creates the pin dir itself
	}
	mountFix := fmt.Sprintf("mount it: mount -t bpf bpf %s (inside a container, mount the host's /sys/fs/bpf), or pass --bpffs a directory inside a bpffs", filepath.Dir(dir))
	t, err := cfg.FSType(at)
	if err != nil {
		return fail(name, fmt.Sprintf("pin dir %s: %v", dir, err), mountFix)
	}
	if t != bpffsMagic {
		return fail(name, fmt.Sprintf("%s is not on a bpffs (filesystem 0x%x), so pins would not outlive the agent", at, t), mountFix)
	}
	if at != dir {
		return pass(name, fmt.Sprintf("%s is a bpffs; the agent creates %s in it", at, dir))
	}
	return pass(name, fmt.Sprintf("pin dir %s is on a bpffs", dir))
}
