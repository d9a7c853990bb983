package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

const bridgeList = `{"cniVersion":"1.0.0","name":"podnet","plugins":[
 {"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.249.0.0/24"}},
 {"type":"portmap","capabilities":{"portMappings":true}}]}`

func setup(t *testing.T, files map[string]string) (bin, conf, self string) {
	t.Helper()
	bin, conf = t.TempDir(), t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	self = filepath.Join(t.TempDir(), "hms-node")
	os.WriteFile(self, []byte("#!binary"), 0o755)
	return bin, conf, self
}

func plugins(t *testing.T, path string) []map[string]any {
	t.Helper()
	doc, err := readJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, p := range doc["plugins"].([]any) {
		out = append(out, p.(map[string]any))
	}
	return out
}

// Install chains us last into the first conflist by name, idempotently;
// Uninstall restores the plugin list exactly and removes the binary.
func TestInstallAndUninstallConflist(t *testing.T) {
	bin, conf, self := setup(t, map[string]string{"10-podnet.conflist": bridgeList, "20-other.conflist": bridgeList})
	in := Install{BinDir: bin, ConfDir: conf, Binary: self, Entry: Conf{Socket: "/run/x.sock", FailClosed: true}}
	before := plugins(t, filepath.Join(conf, "10-podnet.conflist"))
	for i := 0; i < 2; i++ {
		path, err := in.Run()
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(path) != "10-podnet.conflist" {
			t.Fatalf("chained into %s, want the first file by name", path)
		}
	}
	after := plugins(t, filepath.Join(conf, "10-podnet.conflist"))
	if len(after) != 3 || after[2]["type"] != PluginType || after[2]["socket"] != "/run/x.sock" || after[2]["failClosed"] != true {
		t.Fatalf("plugins after two installs: %v", after)
	}
	if !reflect.DeepEqual(after[:2], before) {
		t.Fatalf("the primary plugins changed: %v -> %v", before, after[:2])
	}
	if len(plugins(t, filepath.Join(conf, "20-other.conflist"))) != 2 {
		t.Fatal("a conflist the runtime does not use was changed")
	}
	if st, err := os.Stat(filepath.Join(bin, PluginType)); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("plugin binary: %v %v", st, err)
	}
	if err := Uninstall(bin, conf); err != nil {
		t.Fatal(err)
	}
	if got := plugins(t, filepath.Join(conf, "10-podnet.conflist")); !reflect.DeepEqual(got, before) {
		t.Fatalf("after uninstall %v, want %v", got, before)
	}
	if _, err := os.Stat(filepath.Join(bin, PluginType)); !os.IsNotExist(err) {
		t.Fatalf("plugin binary still there: %v", err)
	}
	if err := Uninstall(bin, conf); err != nil {
		t.Fatalf("a second uninstall must succeed: %v", err)
	}
}

// A single-plugin .conf becomes a conflist holding it, then us.
func TestInstallConvertsASingleConf(t *testing.T) {
	bin, conf, self := setup(t, map[string]string{"05-flat.conf": `{"cniVersion":"0.4.0","name":"flat","type":"bridge","bridge":"br9"}`})
	path, err := (Install{BinDir: bin, ConfDir: conf, Binary: self}).Run()
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "05-flat.conflist" {
		t.Fatalf("wrote %s", path)
	}
	if _, err := os.Stat(filepath.Join(conf, "05-flat.conf")); !os.IsNotExist(err) {
		t.Fatal("the .conf stayed, and would still be picked first")
	}
	b, _ := os.ReadFile(path)
	var doc struct {
		Version string           `json:"cniVersion"`
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Version != "0.4.0" || doc.Name != "flat" || len(doc.Plugins) != 2 || doc.Plugins[0]["bridge"] != "br9" || doc.Plugins[1]["type"] != PluginType {
		t.Fatalf("converted conflist: %s", b)
	}
}

// With no network configuration yet, install fails (the init container
// is retried) rather than inventing one.
func TestInstallWithoutPrimaryConfFails(t *testing.T) {
	bin, conf, self := setup(t, nil)
	if _, err := (Install{BinDir: bin, ConfDir: conf, Binary: self}).Run(); err == nil {
		t.Fatal("install without a network configuration succeeded")
	}
}
