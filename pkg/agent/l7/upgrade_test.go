package l7

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/hms-node/hms-node/internal/testapp"
)

// An upgraded connection passes through both sides of the proxy: the
// calling Client, and the called Server serving a tunnel-like stream.
func TestUpgradeThroughClientAndServer(t *testing.T) {
	app := httptest.NewServer(&testapp.HTTPApp{Body: "app"})
	t.Cleanup(app.Close)
	appEP := netip.MustParseAddrPort(strings.TrimPrefix(app.URL, "http://"))
	srv := &Server{Node: "n2"}
	local := &Local{Namespace: "default", Service: "web", App: &http.Transport{}}
	// The "tunnel": each dial is a loopback connection served by srv.
	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(c, local, Caller{Workload: "default/client"}, appEP.Port())
		}
	}()
	b := &backend{ep: netip.MustParseAddrPort(tl.Addr().String())}
	m := newMesh(t, Policy{}, b)
	c, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out bytes.Buffer
	if err := testapp.UpgradeClient(m.addr, "web.svc", "ping", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `upgraded=hms-echo echo="echo ping"`) {
		t.Fatalf("got %q", out.String())
	}
}
