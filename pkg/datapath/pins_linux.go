package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ensureBPFFS makes sure dir is inside a mounted bpffs, mounting one at
// /sys/fs/bpf when nothing is mounted there yet.
func ensureBPFFS(dir string) error {
	parent := filepath.Dir(dir)
	if !isBPFFS(parent) {
		if parent != "/sys/fs/bpf" {
			return &MissingError{"bpffs at " + parent, "mount it: mount -t bpf bpf " + parent}
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return &MissingError{"bpffs", fmt.Sprintf("mount -t bpf bpf %s failed (%v); mount it on the host or pass --bpffs inside a bpffs", parent, err)}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	return nil
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// openMaps reuses each pinned map whose layout still matches its spec and
// creates the others. A pinned map that no longer matches is stale (left by
// an agent of another version); it is replaced, and the agent re-applies
// its persisted enrollments into the new one.
func openMaps(dir string, specs map[string]*ebpf.MapSpec, log *slog.Logger) (map[string]*ebpf.Map, error) {
	maps := map[string]*ebpf.Map{}
	for name, spec := range specs {
		if strings.HasPrefix(name, ".") {
			continue // .rodata and friends belong to each object
		}
		path := filepath.Join(dir, name)
		if m, err := ebpf.LoadPinnedMap(path, nil); err == nil {
			if cerr := spec.Compatible(m); cerr == nil {
				maps[name] = m
				continue
			} else {
				log.Warn("replacing stale pinned map", "map", name, "reason", cerr)
			}
			m.Close()
			if err := os.Remove(path); err != nil {
				return closeAll(maps, fmt.Errorf("remove stale pin %s: %w", path, err))
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			log.Warn("replacing unreadable pinned map", "map", name, "error", err)
			os.Remove(path)
		}
		m, err := ebpf.NewMap(spec)
		if err != nil {
			return closeAll(maps, fmt.Errorf("create map %s: %w", name, err))
		}
		maps[name] = m
	}
	return maps, nil
}

func closeAll(maps map[string]*ebpf.Map, err error) (map[string]*ebpf.Map, error) {
	for _, m := range maps {
		m.Close()
	}
	return nil, err
}

// pinMaps pins the maps not pinned yet; it runs after every attach
// succeeded, so a failed start leaves no half-made pins behind.
func (d *Datapath) pinMaps() error {
	for name, m := range d.maps {
		if m.IsPinned() {
			continue
		}
		if err := m.Pin(filepath.Join(d.cfg.BPFFS, name)); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	return nil
}

// Cleanup removes everything an agent pinned under dir: links (which
// detaches their programs) and maps. Files that are not ours stay.
func Cleanup(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin dir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(e.Name(), "link_"):
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				l.Unpin()
				l.Close()
			} else if err := os.Remove(path); err != nil {
				errs = append(errs, err)
			}
		case strings.HasPrefix(e.Name(), "hms_"):
			if err := os.Remove(path); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove pin dir (not empty? files not ours stay): %w", err))
	}
	return errors.Join(errs...)
}
