package datapath

import (
	"strings"
	"testing"
)

// Objects share maps by name, so every object must declare each map with
// the same layout; a drift here would make the loader hand one object a map
// it cannot use.
func TestObjectsShareMapLayouts(t *testing.T) {
	all, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	ref := all["connect"].Maps
	for obj, spec := range all {
		for name, ms := range spec.Maps {
			if strings.HasPrefix(name, ".") {
				continue
			}
			want, ok := ref[name]
			if !ok {
				t.Errorf("%s declares map %s that connect does not", obj, name)
				continue
			}
			if ms.Type != want.Type || ms.KeySize != want.KeySize || ms.ValueSize != want.ValueSize || ms.MaxEntries != want.MaxEntries {
				t.Errorf("%s: map %s differs from connect's", obj, name)
			}
		}
		for pname := range spec.Programs {
			if !strings.HasPrefix(pname, "hms_") {
				t.Errorf("%s: program %s lacks the hms_ prefix", obj, pname)
			}
		}
	}
	for _, h := range cgroupHooks {
		found := false
		for _, spec := range all {
			if _, ok := spec.Programs[h.prog]; ok {
				found = true
			}
		}
		if !found {
			t.Errorf("cgroup hook %s has no program", h.prog)
		}
	}
}

func TestCounterNamesMatchMap(t *testing.T) {
	all, err := specs()
	if err != nil {
		t.Fatal(err)
	}
	if got := all["connect"].Maps["hms_counters"].MaxEntries; int(got) != len(CounterNames) {
		t.Fatalf("hms_counters has %d entries, CounterNames %d", got, len(CounterNames))
	}
}

func TestWordsRoundTrip(t *testing.T) {
	b := [16]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 250, 1, 2}
	if bytes16(words(b)) != b {
		t.Fatal("words/bytes16 do not round-trip")
	}
}
