package testbed

import (
	"net/netip"
	"testing"
)

func TestIfNamesFitAndDiffer(t *testing.T) {
	seen := map[string]bool{}
	for _, pid := range []int{1, 35, 36, 4194303} {
		for _, n := range []int{1, 2, 36, 1295} {
			tag := ifTag(pid, n)
			for _, role := range []byte{'b', 'f', 'u', 'd', 'p'} {
				name := ifName(tag, role, 254, 253)
				if len(name) > 15 {
					t.Fatalf("%q is %d chars, IFNAMSIZ allows 15", name, len(name))
				}
				if seen[name] {
					t.Fatalf("%q generated twice", name)
				}
				seen[name] = true
			}
		}
	}
}

func TestOwnerPID(t *testing.T) {
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"hmst-123-1", 123, true},
		{"hmst-123-1-n2p3", 123, true},
		{"hmst-123-1-fab", 123, true},
		{"hmst-123", 0, false},
		{"hmst-x-1", 0, false},
		{"hmstx-123-1", 0, false},
		{"other-123-1", 0, false},
		{"hmst--1", 0, false},
	} {
		pid, ok := ownerPID("hmst", tc.name)
		if pid != tc.pid || ok != tc.ok {
			t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", tc.name, pid, ok, tc.pid, tc.ok)
		}
	}
	if id := bedID("hmst", 42, 7); id != "hmst-42-7" {
		t.Errorf("bedID = %q", id)
	}
}

func TestAddresses(t *testing.T) {
	s, err := nodeSubnet(3)
	if err != nil || s != netip.MustParsePrefix("10.250.3.0/24") {
		t.Fatalf("nodeSubnet(3) = %v, %v", s, err)
	}
	if gw := hostAddr(s, 1); gw != netip.MustParseAddr("10.250.3.1") {
		t.Errorf("gateway = %v", gw)
	}
	if a, err := podAddr(s, 1); err != nil || a != netip.MustParseAddr("10.250.3.2") {
		t.Errorf("podAddr(1) = %v, %v", a, err)
	}
	if a, err := podAddr(s, maxPods); err != nil || a != netip.MustParseAddr("10.250.3.254") {
		t.Errorf("podAddr(max) = %v, %v", a, err)
	}
	if _, err := podAddr(s, maxPods+1); err == nil {
		t.Error("podAddr past .254 succeeded")
	}
	for _, idx := range []int{0, 255} {
		if _, err := nodeSubnet(idx); err == nil {
			t.Errorf("nodeSubnet(%d) succeeded", idx)
		}
	}
	if f := fabricAddr(7); f != netip.MustParseAddr("10.250.255.7") || !PodRange.Contains(f) {
		t.Errorf("fabricAddr(7) = %v", f)
	}
}

func TestValidation(t *testing.T) {
	for _, bad := range []string{"", "a/b", "..", "cgroup.procs", "x y"} {
		if validName(bad) == nil {
			t.Errorf("validName(%q) accepted", bad)
		}
	}
	if err := validName("node-1.a_b"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "HMS", "toolongprefix", "a-b"} {
		if validPrefix(bad) == nil {
			t.Errorf("validPrefix(%q) accepted", bad)
		}
	}
}
