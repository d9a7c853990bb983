package doctor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAgent serves GET /v1/status on a real unix socket, as the agent's
// local API does.
func fakeAgent(t *testing.T, status map[string]any) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hms-doctor-") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(status)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path
}

// pinDir makes a pin dir holding what an agent pins, and a file that is
// not ours.
func pinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "hms")
	os.Mkdir(dir, 0o700)
	for _, n := range []string{"link_connect4", "link_sockops", "hms_enrolled", "hms_counters", "README"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	return dir
}

func TestAgentAnswers(t *testing.T) {
	dir := pinDir(t)
	sock := fakeAgent(t, map[string]any{
		"node": "n1", "version": "v1.2.3", "uptime_seconds": 90,
		"workloads": []map[string]any{{"netns": "/run/netns/a"}, {"netns": "/run/netns/b"}},
		"registry":  map[string]any{"address": "127.0.0.1:9090", "connected": true},
		"datapath":  map[string]any{"pin_path": dir},
	})
	cfg := Config{Socket: sock, BPFFS: dir}.withDefaults()
	st, r := checkAgent(context.Background(), cfg)
	if !r.OK || r.Detail != sock+" answers: node n1, agent v1.2.3, up 1m30s, 2 workloads, registry connected" {
		t.Fatalf("agent socket: %+v", r)
	}
	if r := checkPins(cfg, st); !r.OK || r.Detail != "4 pins under "+dir+", in use by the running agent (node n1)" {
		t.Errorf("pins of the running agent: %+v", r)
	}
	// The agent's pins live elsewhere: these are someone's leftovers.
	other := Config{Socket: sock, BPFFS: pinDir(t)}.withDefaults()
	if r := checkPins(other, st); r.OK || !strings.Contains(r.Detail, "the running agent pins under "+dir+" instead") {
		t.Errorf("pins beside a running agent's: %+v", r)
	}
}

func TestAgentGoneLeavesPins(t *testing.T) {
	dir := pinDir(t)
	sock := filepath.Join(t.TempDir(), "agent.sock") // nobody listens
	cfg := Config{Socket: sock, BPFFS: dir}.withDefaults()
	st, r := checkAgent(context.Background(), cfg)
	if st != nil || r.OK || r.Check != "agent socket" || !strings.Contains(r.Detail, "no agent socket at "+sock) || !strings.Contains(r.Fix, "start the agent") {
		t.Fatalf("agent socket: %+v", r)
	}
	r = checkPins(cfg, st)
	want := "4 pins under " + dir + " (hms_counters, hms_enrolled, link_connect4, and 1 more) and no agent answers on " + sock
	if r.OK || r.Check != "leftover pins" || !strings.HasPrefix(r.Detail, want) || !strings.Contains(r.Fix, "hms-node agent --cleanup --bpffs "+dir) {
		t.Errorf("leftover pins: %+v\nwant detail starting %q", r, want)
	}
	// No pins at all: nothing left over.
	empty := Config{Socket: sock, BPFFS: filepath.Join(t.TempDir(), "hms")}.withDefaults()
	if r := checkPins(empty, nil); !r.OK || !strings.HasPrefix(r.Detail, "none under ") {
		t.Errorf("no pins: %+v", r)
	}
}
