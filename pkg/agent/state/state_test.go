package state

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

type enrollments struct {
	Workloads map[string]string `json:"workloads"`
	Revision  int64             `json:"revision"`
}

// TestSaveLoadRoundTrip proves a saved value loads back equal, an overwrite
// replaces it, and no temp file is left behind.
func TestSaveLoadRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	var empty enrollments
	if found, err := Load(dir, &empty); err != nil || found {
		t.Fatalf("Load of missing state = %v, %v; want false, nil", found, err)
	}
	for rev := int64(1); rev <= 2; rev++ {
		want := enrollments{Workloads: map[string]string{"/run/netns/a": "web"}, Revision: rev}
		if err := Save(dir, want); err != nil {
			t.Fatal(err)
		}
		var got enrollments
		found, err := Load(dir, &got)
		if err != nil || !found {
			t.Fatalf("Load = %v, %v", found, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Load = %+v, want %+v", got, want)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != FileName {
		t.Fatalf("state dir holds %v, want only %s", ents, FileName)
	}
}

// TestSaveMode proves the file is 0600 even under a permissive umask.
func TestSaveMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	if err := Save(dir, enrollments{Revision: 1}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, want 0600", fi.Mode().Perm())
	}
}

// TestLoadCorrupt proves a corrupt or empty file is an error naming the file,
// never an empty state.
func TestLoadCorrupt(t *testing.T) {
	for _, content := range []string{`{"workloads": {"a": `, ""} {
		dir := t.TempDir()
		path := filepath.Join(dir, FileName)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		var got enrollments
		found, err := Load(dir, &got)
		if err == nil {
			t.Fatalf("Load of %q succeeded (found=%v), want an error", content, found)
		}
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("error %q does not name %s", err, path)
		}
	}
}
