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
	"strconv"
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
	mounts, err := Mounts(path)
	if err != nil {
		return "", err
	}
	for _, m := range mounts {
		if m.FSType == "cgroup2" {
			return m.Point, nil
		}
	}
	return "", ErrNotMounted
}

// MountEntry is one line of a mountinfo file.
type MountEntry struct {
	Point  string // the mount point, unescaped
	FSType string
}

// Mounts parses a mountinfo file (/proc/self/mountinfo): "id parent
// major:minor root point opts [optional...] - fstype source superopts".
func Mounts(path string) ([]MountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []MountEntry
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && len(fields) > 4 {
				out = append(out, MountEntry{Point: unescapeMount(fields[4]), FSType: fields[i+1]})
				break
			}
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
