package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Install is what `hms-node cni install` does on a node: put the plugin
// binary in BinDir and chain it into the network configuration the runtime
// uses (the first file of ConfDir by name, as libcni picks).
type Install struct {
	// BinDir is the CNI bin dir; the plugin is written there as hms-cni.
	BinDir string
	// ConfDir is the CNI conf dir (/etc/cni/net.d on the host).
	ConfDir string
	// Binary is the file copied as the plugin; default the running
	// executable (hms-node dispatches on its name).
	Binary string
	// Entry is the plugin's own entry in the conflist; its Type is set.
	Entry Conf
}

// confExts are the files libcni reads from a conf dir, in its order.
var confExts = []string{".conflist", ".conf", ".json"}

// Run installs the binary, then the conflist entry, each atomically
// (written beside, then renamed), and returns the file it changed. It is
// idempotent: an older entry of ours is replaced, not duplicated.
func (in Install) Run() (string, error) {
	if in.Binary == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		in.Binary = self
	}
	if err := copyAtomic(in.Binary, filepath.Join(in.BinDir, PluginType), 0o755); err != nil {
		return "", fmt.Errorf("install %s into %s: %w", PluginType, in.BinDir, err)
	}
	path, err := primaryConf(in.ConfDir)
	if err != nil {
		return "", err
	}
	doc, err := readJSON(path)
	if err != nil {
		return "", err
	}
	list, isList := doc["plugins"].([]any)
	if !isList { // a single-plugin .conf becomes a conflist holding it
		single := doc
		doc = map[string]any{"cniVersion": single["cniVersion"], "name": single["name"]}
		delete(single, "name")
		list = []any{single}
	}
	entry := in.Entry
	entry.Type = PluginType
	raw, err := json.Marshal(entry)
	if err != nil {
		return "", err
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	doc["plugins"] = append(withoutOurs(list), m)
	out := path
	if !isList {
		out = strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
	}
	if err := writeJSONAtomic(out, doc); err != nil {
		return "", err
	}
	if out != path {
		if err := os.Remove(path); err != nil {
			return "", err
		}
	}
	return out, nil
}

// Uninstall removes our entry from every conflist of confDir and the
// plugin binary from binDir; what is not ours stays as it was.
func Uninstall(binDir, confDir string) error {
	entries, err := os.ReadDir(confDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(confDir, e.Name())
		if e.IsDir() || filepath.Ext(path) != ".conflist" {
			continue
		}
		doc, err := readJSON(path)
		if err != nil {
			continue // not ours to judge
		}
		list, _ := doc["plugins"].([]any)
		kept := withoutOurs(list)
		if len(kept) == len(list) {
			continue
		}
		doc["plugins"] = kept
		errs = append(errs, writeJSONAtomic(path, doc))
	}
	if err := os.Remove(filepath.Join(binDir, PluginType)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func withoutOurs(list []any) []any {
	out := make([]any, 0, len(list))
	for _, p := range list {
		if m, ok := p.(map[string]any); ok && m["type"] == PluginType {
			continue
		}
		out = append(out, p)
	}
	return out
}

// primaryConf is the file libcni would load first from dir.
func primaryConf(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("CNI conf dir: %w", err)
	}
	var names []string
	for _, e := range entries {
		for _, ext := range confExts {
			if !e.IsDir() && filepath.Ext(e.Name()) == ext {
				names = append(names, e.Name())
			}
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no CNI network configuration in %s yet (the cluster's network plugin writes it); retry once it has", dir)
	}
	sort.Strings(names)
	return filepath.Join(dir, names[0]), nil
}

func readJSON(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

func writeJSONAtomic(path string, doc map[string]any) error {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, append(b, '\n'), 0o644)
}

func copyAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeFrom(dst, in, mode)
}

func writeAtomic(dst string, data []byte, mode os.FileMode) error {
	return writeFrom(dst, strings.NewReader(string(data)), mode)
}

// writeFrom writes beside dst and renames, so the runtime never runs a
// half-written plugin or reads a half-written conflist.
func writeFrom(dst string, r io.Reader, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = io.Copy(f, r); err != nil {
		return err
	}
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}
