package cgroupv2

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMountFromHybridAndUnified(t *testing.T) {
	for _, tc := range []struct{ name, line, want string }{
		{"hybrid", "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "/sys/fs/cgroup/unified"},
		{"unified", "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n", "/sys/fs/cgroup"},
	} {
		p := filepath.Join(t.TempDir(), "mountinfo")
		content := "22 1 0:21 / /proc rw - proc proc rw\n" + tc.line
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := mountFrom(p)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestMountFromNone(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(p, []byte("22 1 0:21 / /proc rw - proc proc rw\n"), 0o644)
	if _, err := mountFrom(p); err != ErrNotMounted {
		t.Fatalf("got %v, want ErrNotMounted", err)
	}
}

func TestMountsUnescapes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	os.WriteFile(p, []byte(`50 1 0:40 / /mnt/with\040space rw - cgroup2 cgroup2 rw`+"\n"), 0o644)
	ms, err := Mounts(p)
	if err != nil || len(ms) != 1 || ms[0].Point != "/mnt/with space" || ms[0].FSType != "cgroup2" {
		t.Fatalf("Mounts = %+v, %v", ms, err)
	}
}
