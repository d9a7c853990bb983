package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/hms-node/hms-node/pkg/agent/kube"
	"github.com/hms-node/hms-node/pkg/agent/localapi"
	hnetns "github.com/hms-node/hms-node/pkg/agent/netns"
	"github.com/hms-node/hms-node/pkg/cni"
)

// startCNI starts the membership reconciler: pod labels (Config.Kube) or
// the CNI plugin's arguments decide, and the pods of this node that
// already run are enrolled now. It runs after a take-over, so pods the
// predecessor served are found enrolled and left alone.
func (a *Agent) startCNI(ctx context.Context) error {
	rec, err := kube.New(kube.Config{Node: a.cfg.Node, Client: a.cfg.Kube, Enroller: agentEnroller{a},
		StateDir: a.cfg.StateDir, FindNetns: a.findNetns, Log: a.log.With("component", "membership")})
	if err != nil {
		return fmt.Errorf("pod membership: %w", err)
	}
	a.membership.Store(rec)
	go func() {
		if err := rec.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("pod membership stopped", "error", err)
		}
	}()
	return nil
}

// cniRoutes serves the CNI plugin (pkg/cni).
func (a *Agent) cniRoutes(mux *http.ServeMux) {
	handle := func(path string, do func(*kube.Reconciler, kube.Sandbox) (cni.Reply, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			var req cni.Request
			if !decode(w, r, &req) {
				return
			}
			rec := a.membership.Load()
			if rec == nil || a.isClosed() {
				localapi.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting or handing over; retry"))
				return
			}
			reply, err := do(rec, sandboxOf(req))
			if err != nil {
				localapi.WriteError(w, http.StatusConflict, err)
				return
			}
			localapi.WriteJSON(w, http.StatusOK, reply)
		})
	}
	handle(cni.PathAdd, func(rec *kube.Reconciler, sb kube.Sandbox) (cni.Reply, error) {
		want, enrolled, err := rec.Add(sb)
		return replyOf(want, enrolled), err
	})
	handle(cni.PathDel, func(rec *kube.Reconciler, sb kube.Sandbox) (cni.Reply, error) {
		return cni.Reply{}, rec.Del(sb)
	})
	handle(cni.PathCheck, func(rec *kube.Reconciler, sb kube.Sandbox) (cni.Reply, error) {
		want, err := rec.Check(sb)
		return replyOf(want, err == nil && want.Member), err
	})
}

func sandboxOf(req cni.Request) kube.Sandbox {
	sb := kube.Sandbox{UID: req.PodUID, Name: req.PodName, Namespace: req.PodNS, ContainerID: req.ContainerID,
		Netns: req.Netns, Service: req.Service, Ports: req.Ports}
	sb.IP, _ = netip.ParseAddr(req.IP)
	return sb
}

func replyOf(w kube.Want, enrolled bool) cni.Reply {
	return cni.Reply{Member: w.Member, Enrolled: enrolled, Service: w.Service, Namespace: w.Namespace, Reason: w.Reason}
}

// findNetns finds the netns holding ip among the runtime's named
// namespaces (NetnsDir), for pods that started before the agent.
func (a *Agent) findNetns(ip netip.Addr) (string, error) {
	dir := a.cfg.NetnsDir
	if dir == "" {
		dir = "/var/run/netns"
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if got, err := podIP(path); err == nil && got == ip {
			found = append(found, path)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no netns in %s has %s", dir, ip)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d namespaces in %s have %s: not guessing", len(found), dir, ip)
}

// agentEnroller is the reconciler's view of the agent.
type agentEnroller struct{ a *Agent }

func (e agentEnroller) Enrollments() map[string]kube.Enrollment {
	a := e.a
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]kube.Enrollment, len(a.pods)+len(a.degraded))
	for path, p := range a.pods {
		if !p.dev {
			out[path] = kube.Enrollment{Service: p.spec.Service, Namespace: p.spec.Namespace, Ports: p.spec.Ports}
		}
	}
	for path, d := range a.degraded {
		out[path] = kube.Enrollment{Service: d.spec.Service, Namespace: d.spec.Namespace, Ports: d.spec.Ports, Degraded: true}
	}
	return out
}

func (e agentEnroller) Enroll(netns, service, namespace string, ports []uint16) error {
	_, err := e.a.Enroll(EnrollRequest{Netns: netns, Service: service, Namespace: namespace, Ports: ports})
	return err
}

func (e agentEnroller) Unenroll(netns string) error { return e.a.Unenroll(netns) }

// Verify checks what can break behind the agent's back: the pod's netns
// replaced by another at the same path (the datapath then steers a
// namespace that no longer exists).
func (e agentEnroller) Verify(netns string) error {
	a := e.a
	a.mu.Lock()
	p, ok := a.pods[netns]
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s is not enrolled", netns)
	}
	cookie, err := hnetns.Cookie(netns)
	if err != nil {
		return fmt.Errorf("%s: %w", netns, err)
	}
	if cookie != p.spec.Cookie {
		return fmt.Errorf("%s is another network namespace now (cookie %d, enrolled %d): unenroll and add it again", netns, cookie, p.spec.Cookie)
	}
	return nil
}
