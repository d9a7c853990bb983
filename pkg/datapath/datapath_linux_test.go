package datapath

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/hms-node/hms-node/internal/cgroupv2"
)

func requirePrivileged(t *testing.T) {
	t.Helper()
	if os.Getenv("HMS_TEST_PRIVILEGED") != "1" || os.Geteuid() != 0 {
		t.Skip("privileged test: set HMS_TEST_PRIVILEGED=1 and run as root")
	}
}

// testConfig gives each test its own cgroup and pin dir, removed at the end.
func testConfig(t *testing.T) Config {
	t.Helper()
	mnt, err := cgroupv2.Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.MkdirTemp(mnt, "hmsdp-")
	if err != nil {
		t.Fatal(err)
	}
	pins := "/sys/fs/bpf/hmsdp-" + filepath.Base(cg)
	t.Cleanup(func() {
		if err := Cleanup(pins); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		os.Remove(cg)
	})
	return Config{BPFFS: pins, CgroupRoot: cg, AgentCgroup: cg}
}

func linkIDs(t *testing.T, dir string) map[string]link.ID {
	t.Helper()
	ids := map[string]link.ID{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil)
		if err != nil {
			continue
		}
		info, err := l.Info()
		if err == nil {
			ids[e.Name()] = info.ID
		}
		l.Close()
	}
	return ids
}

func TestPrivilegedOpenReattachAndCleanup(t *testing.T) {
	requirePrivileged(t)
	cfg := testConfig(t)
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.maps["hms_pods"].Put(uint64(42), connectEnrollment{OutboundPort: OutboundPort}); err != nil {
		t.Fatal(err)
	}
	first := linkIDs(t, cfg.BPFFS)
	if len(first) != len(cgroupHooks) {
		t.Fatalf("pinned links %v, want %d", first, len(cgroupHooks))
	}
	d.Close()

	// A restarted agent updates the same links in place and keeps the maps.
	d2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	second := linkIDs(t, cfg.BPFFS)
	for pin, id := range first {
		if second[pin] != id {
			t.Errorf("link %s: id %d became %d; want an in-place update", pin, id, second[pin])
		}
	}
	var e connectEnrollment
	if err := d2.maps["hms_pods"].Lookup(uint64(42), &e); err != nil {
		t.Errorf("enrollment lost across restart: %v", err)
	}

	if err := Cleanup(cfg.BPFFS); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.BPFFS); !os.IsNotExist(err) {
		t.Fatalf("pin dir still there after Cleanup: %v", err)
	}
}

func TestPrivilegedStalePinnedMapReplaced(t *testing.T) {
	requirePrivileged(t)
	cfg := testConfig(t)
	if err := ensureBPFFS(cfg.BPFFS); err != nil {
		t.Fatal(err)
	}
	stale, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Pin(filepath.Join(cfg.BPFFS, "hms_pods")); err != nil {
		t.Fatal(err)
	}
	stale.Close()
	d, err := Open(cfg)
	if err != nil {
		t.Fatalf("open with a stale pin: %v", err)
	}
	defer d.Close()
	m, err := ebpf.LoadPinnedMap(filepath.Join(cfg.BPFFS, "hms_pods"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.KeySize() != 8 {
		t.Fatalf("stale pin not replaced: key size %d", m.KeySize())
	}
}

func TestPrivilegedVIPMapRoundTrip(t *testing.T) {
	requirePrivileged(t)
	d, err := Open(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vp := netip.MustParseAddrPort("240.240.0.7:7000")
	if err := d.SetVIP(vp, 3); err != nil {
		t.Fatal(err)
	}
	got, err := d.VIPs()
	if err != nil || len(got) != 1 || got[vp] != 3 {
		t.Fatalf("VIPs after set: %v, %v", got, err)
	}
	if err := d.SetVIP(netip.MustParseAddrPort("[fd00::1]:80"), 1); err == nil {
		t.Fatal("an IPv6 VIP was accepted")
	}
	if err := d.DeleteVIP(vp); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVIP(vp); err != nil {
		t.Fatalf("deleting a missing VIP: %v", err)
	}
	if got, _ := d.VIPs(); len(got) != 0 {
		t.Fatalf("VIPs after delete: %v", got)
	}
}

func TestVIPRangeWords(t *testing.T) {
	n, m := vipRangeWords(netip.MustParsePrefix("240.240.0.0/16"))
	if n != 0x0000f0f0 || m != 0x0000ffff {
		t.Fatalf("240.240.0.0/16 -> net %#x mask %#x; the C defaults say 0xf0f0/0xffff", n, m)
	}
}
