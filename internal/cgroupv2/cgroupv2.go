// Package cgroupv2 finds the host's cgroup v2 mount and the cgroup of a
// process. Hybrid hosts mount it at /sys/fs/cgroup/unified, unified ones at
// /sys/fs/cgroup; mountinfo says which.
package cgroupv2

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotMounted means no cgroup2 filesystem is mounted in this mount namespace.
var ErrNotMounted = errors.New("no cgroup2 filesystem mounted (mount one: mount -t cgroup2 none /sys/fs/cgroup)")

// Mount returns the mount point of the first cgroup2 filesystem in
// /proc/self/mountinfo.
func Mount() (string, error) {
	return mountFrom("/proc/self/mountinfo")
}

func mountFrom(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	if err := s.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	return "", ErrNotMounted
}

// Self returns the absolute directory of the calling process's cgroup v2.
func Self() (string, error) {
	mnt, err := Mount()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rel, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, rel), nil
		}
	}
	return "", errors.New("own cgroup: no cgroup v2 entry in /proc/self/cgroup")
}
