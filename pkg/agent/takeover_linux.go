package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/handover"
	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

// handoverTimeout bounds a whole hand-over; without a commit in time the
// old agent keeps serving as if nothing happened.
const handoverTimeout = 15 * time.Second

// Names of the agent-wide sockets in a hand-over; pod listeners are
// "pod/<cookie>/<listener>".
const (
	sockAPI      = "api"
	sockHandover = "handover"
	sockMetrics  = "metrics"
)

func podSock(cookie uint64, ln string) string { return fmt.Sprintf("pod/%d/%s", cookie, ln) }

// inheritance is what a predecessor handed over, until we commit.
type inheritance struct {
	conn *net.UnixConn
	rcv  *handover.Received
}

func (in *inheritance) commit() {
	if err := handover.Commit(in.conn); err != nil {
		// The predecessor keeps serving too; both share the sockets.
		fmt.Fprintln(os.Stderr, "hand-over commit:", err)
	}
	in.conn.Close()
}

// takeOverPredecessor asks a running agent on our socket for its sockets
// and state. No agent answering is not an error: we start fresh.
func (a *Agent) takeOverPredecessor() (*inheritance, error) {
	c, err := net.DialTimeout("unix", a.cfg.Socket+".handover", 2*time.Second)
	if err != nil {
		return nil, nil
	}
	conn := c.(*net.UnixConn)
	rcv, err := handover.Take(conn, time.Now().Add(handoverTimeout))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("take over from the running agent on %s: %w", a.cfg.Socket, err)
	}
	var st persisted
	if err := json.Unmarshal(rcv.State, &st); err != nil {
		rcv.Close()
		conn.Close()
		return nil, fmt.Errorf("take over: predecessor's state: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, spec := range st.Pods {
		inherited := &podSockets{tcp: map[string]*net.TCPListener{}, udp: map[string]*net.UDPConn{}}
		for name := range listenAddrs {
			if l, err := rcv.Listener(podSock(spec.Cookie, name)); err == nil {
				if tl, ok := l.(*net.TCPListener); ok {
					inherited.tcp[name] = tl
				}
			} // else re-created by openListeners
		}
		for name := range dnsAddrs {
			if pc, err := rcv.PacketConn(podSock(spec.Cookie, name)); err == nil {
				if uc, ok := pc.(*net.UDPConn); ok {
					inherited.udp[name] = uc
				}
			}
		}
		if _, err := a.startPodLocked(spec, inherited, true); err != nil {
			a.log.Error("take over pod; it stays failing closed", "netns", spec.Netns, "error", err)
			a.degraded[spec.Netns] = degradedPod{spec, err.Error()}
		}
	}
	if err := a.saveLocked(); err != nil {
		return nil, err
	}
	a.log.Info("took over from the running agent", "pods", len(st.Pods))
	return &inheritance{conn: conn, rcv: rcv}, nil
}

// startServers opens (or adopts) the health/metrics endpoint, the local
// API and the hand-over socket — the TCP port first, so a port clash fails
// before a socket file exists. On error it closes what it opened.
func (a *Agent) startServers(in *inheritance) (err error) {
	s := &apiServer{local: &localapi.Server{Handler: a.handler(), Log: a.log}}
	if in != nil {
		s.localLn, _ = in.rcv.UnixListener(sockAPI)
		if tl, err := in.rcv.UnixListener(sockHandover); err == nil {
			a.takeover = tl
		}
		if l, err := in.rcv.Listener(sockMetrics); err == nil {
			s.healthL = l
		}
	}
	defer func() {
		if err == nil {
			return
		}
		if s.healthL != nil {
			s.healthL.Close()
		}
		if s.localLn != nil {
			s.localLn.Close() // unlinks the socket file it created
		}
		if a.takeover != nil {
			a.takeover.Close()
			a.takeover = nil
		}
	}()
	if s.healthL == nil && a.cfg.MetricsAddr != "off" {
		if s.healthL, err = net.Listen("tcp", a.cfg.MetricsAddr); err != nil {
			return fmt.Errorf("metrics endpoint %s: %w", a.cfg.MetricsAddr, err)
		}
	}
	if s.localLn == nil {
		if s.localLn, err = localapi.Listen(a.cfg.Socket); err != nil {
			if errors.Is(err, localapi.ErrInUse) {
				return fmt.Errorf("another agent answers on %s but refused to hand over; stop it or use another --socket", a.cfg.Socket)
			}
			return fmt.Errorf("local API: %w", err)
		}
	}
	if a.takeover == nil {
		if a.takeover, err = localapi.Listen(a.cfg.Socket + ".handover"); err != nil {
			return fmt.Errorf("hand-over socket: %w", err)
		}
	}
	a.api = s
	go s.local.Serve(s.localLn)
	if s.healthL != nil {
		s.health = &http.Server{Handler: a.healthHandler(), ReadHeaderTimeout: 5 * time.Second}
		go s.health.Serve(s.healthL)
	}
	go a.serveHandover()
	return nil
}

// serveHandover offers our sockets to each successor that asks, one at a
// time; after a commit this agent stops accepting and drains.
func (a *Agent) serveHandover() {
	for {
		c, err := a.takeover.Accept()
		if err != nil {
			return
		}
		if a.offer(c.(*net.UnixConn)) {
			close(a.handover)
			return
		}
	}
}

func (a *Agent) offer(conn *net.UnixConn) bool {
	defer conn.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	specs := make([]PodSpec, 0, len(a.pods)+len(a.degraded))
	var socks []handover.Socket
	for _, p := range a.pods {
		if p.dev {
			continue // dev workloads stay with the agent that runs them
		}
		spec := p.spec
		p.mu.Lock()
		for port, ok := range p.healthy {
			if ok {
				spec.HealthyPorts = append(spec.HealthyPorts, port)
			}
		}
		p.mu.Unlock()
		specs = append(specs, spec)
		for name, l := range p.ln {
			socks = append(socks, handover.Socket{Name: podSock(p.spec.Cookie, name), Conn: l})
		}
		socks = append(socks, handover.Socket{Name: podSock(p.spec.Cookie, lnDNS4), Conn: p.dns4})
		if p.dns6 != nil {
			socks = append(socks, handover.Socket{Name: podSock(p.spec.Cookie, lnDNS6), Conn: p.dns6})
		}
	}
	for _, d := range a.degraded {
		specs = append(specs, d.spec)
	}
	socks = append(socks, handover.Socket{Name: sockAPI, Conn: a.api.localLn})
	if ul, ok := a.takeover.(*net.UnixListener); ok {
		socks = append(socks, handover.Socket{Name: sockHandover, Conn: ul})
	}
	if tl, ok := a.api.healthL.(*net.TCPListener); ok {
		socks = append(socks, handover.Socket{Name: sockMetrics, Conn: tl})
	}
	st, _ := json.Marshal(persisted{Version: 1, Pods: specs})
	if err := handover.Offer(conn, st, socks, time.Now().Add(handoverTimeout)); err != nil {
		a.log.Warn("hand-over not committed; still serving", "error", err)
		return false
	}
	a.handedOver = true
	return true
}

func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) }
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	mux.Handle("GET /metrics", a.metrics.Handler())
	return mux
}
