package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

// fakeAgent serves /v1/lookup on a real unix socket the way the agent
// does, answering for one service whose "VIP" is a local HTTP server.
func fakeAgent(t *testing.T, healthy int) (socket string, hits *int) {
	t.Helper()
	hits = new(int)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*hits++
		w.Write([]byte("host=" + r.Host + " path=" + r.URL.Path))
	}))
	t.Cleanup(app.Close)
	host, portStr, _ := net.SplitHostPort(app.Listener.Addr().String())
	port, _ := strconv.Atoi(portStr)
	socket = filepath.Join(t.TempDir(), "agent.sock")
	l, err := localapi.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/lookup", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("name") != "notify-svc" {
			localapi.WriteError(w, http.StatusNotFound, errString("no service default/"+r.URL.Query().Get("name")+" in the registry"))
			return
		}
		localapi.WriteJSON(w, http.StatusOK, Service{Name: "notify-svc", Namespace: "default", VIP: host,
			Ports: []uint32{uint32(port)}, Protocol: "http", Healthy: healthy})
	})
	srv := &localapi.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return socket, hits
}

type errString string

func (e errString) Error() string { return string(e) }

func TestDiscoverAndCall(t *testing.T) {
	socket, hits := fakeAgent(t, 2)
	c := &Client{Socket: socket}
	ctx := context.Background()
	url, err := c.Discover(ctx, "notify-svc")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "http://notify-svc.default.svc:") {
		t.Fatalf("Discover = %q", url)
	}
	body, err := c.Call(ctx, "GET", "notify-svc", "/sms", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "host=notify-svc.default.svc path=/sms" || *hits != 1 {
		t.Fatalf("Call body %q, hits %d", body, *hits)
	}
	if _, err := c.Discover(ctx, "nope"); err == nil || !strings.Contains(err.Error(), "no service default/nope") {
		t.Fatalf("Discover of a missing service: %v", err)
	}
}

func TestDiscoverNeedsAHealthyInstance(t *testing.T) {
	socket, _ := fakeAgent(t, 0)
	if _, err := (&Client{Socket: socket}).Discover(context.Background(), "notify-svc"); err == nil || !strings.Contains(err.Error(), "no healthy instance") {
		t.Fatalf("got %v", err)
	}
}

func TestNoAgent(t *testing.T) {
	_, err := (&Client{Socket: filepath.Join(t.TempDir(), "none.sock")}).Discover(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "is the agent running") {
		t.Fatalf("got %v", err)
	}
}
