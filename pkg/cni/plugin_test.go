package cni

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
)

// fakeAgent answers the plugin on a unix socket with status code and
// records what it was told.
func fakeAgent(t *testing.T, code int, body string) (string, chan Request) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Request, 4)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Request
		json.NewDecoder(r.Body).Decode(&req)
		got <- req
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock, got
}

func confJSON(sock string, failClosed bool) []byte {
	c := map[string]any{"cniVersion": "1.0.0", "name": "podnet", "type": PluginType, "socket": sock, "failClosed": failClosed,
		"prevResult": map[string]any{"cniVersion": "1.0.0",
			"interfaces": []any{map[string]any{"name": "veth1"}, map[string]any{"name": "eth0", "sandbox": "/run/netns/p"}},
			"ips":        []any{map[string]any{"address": "10.249.0.1/24", "interface": 0}, map[string]any{"address": "10.249.0.7/24", "interface": 1}}}}
	b, _ := json.Marshal(c)
	return b
}

// runAdd runs ADD with stdout captured: the result the runtime would read.
func runAdd(t *testing.T, conf []byte) (string, error) {
	t.Helper()
	r, w, _ := os.Pipe()
	old := os.Stdout
	os.Stdout = w
	err := cmdAdd(&skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/p", IfName: "eth0", StdinData: conf,
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;K8S_POD_UID=u1;HMS_SERVICE=web;HMS_PORTS=8080,9090;X=y"})
	os.Stdout = old
	w.Close()
	out, _ := io.ReadAll(r)
	return string(out), err
}

func TestAddTellsTheAgentAndPassesThePrevResult(t *testing.T) {
	sock, got := fakeAgent(t, 200, `{"member":true,"enrolled":true}`)
	out, err := runAdd(t, confJSON(sock, true))
	if err != nil {
		t.Fatal(err)
	}
	req := <-got
	if req.Netns != "/run/netns/p" || req.IP != "10.249.0.7" || req.PodName != "web-1" || req.PodNS != "shop" ||
		req.PodUID != "u1" || req.Service != "web" || len(req.Ports) != 2 || req.ContainerID != "c1" {
		t.Fatalf("the agent was told %+v", req)
	}
	if !strings.Contains(out, "10.249.0.7/24") {
		t.Fatalf("ADD did not pass the previous result on: %q", out)
	}
}

// Fail-open: an unreachable or refusing agent never blocks the pod.
// Fail-closed: both fail the ADD.
func TestAddFailOpenAndFailClosed(t *testing.T) {
	refusing, _ := fakeAgent(t, 409, `{"error":"enroll: port 0 is not a service port"}`)
	missing := filepath.Join(t.TempDir(), "none.sock")
	for _, sock := range []string{refusing, missing} {
		if out, err := runAdd(t, confJSON(sock, false)); err != nil || !strings.Contains(out, "10.249.0.7") {
			t.Errorf("fail-open ADD with agent %s: err=%v out=%q", sock, err, out)
		}
		if _, err := runAdd(t, confJSON(sock, true)); err == nil {
			t.Errorf("fail-closed ADD with agent %s succeeded", sock)
		}
	}
}

// DEL always succeeds; CHECK reports what the agent found broken.
func TestDelNeverFailsCheckReportsBreakage(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	if err := cmdDel(&skel.CmdArgs{ContainerID: "c1", StdinData: confJSON(missing, true)}); err != nil {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	broken, _ := fakeAgent(t, 409, `{"error":"/run/netns/p should be in the mesh as shop/web but is not enrolled"}`)
	err := cmdCheck(&skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/p", StdinData: confJSON(broken, false)})
	if err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("CHECK of a broken enrollment: %v", err)
	}
	if err := cmdCheck(&skel.CmdArgs{Netns: "/run/netns/p", StdinData: confJSON(missing, false)}); err != nil {
		t.Fatalf("fail-open CHECK with the agent down: %v", err)
	}
	if err := cmdCheck(&skel.CmdArgs{Netns: "/run/netns/p", StdinData: confJSON(missing, true)}); err == nil {
		t.Fatal("fail-closed CHECK with the agent down succeeded")
	}
}
