package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Config of a Reconciler; the zero value of each field documents its
// default.
type Config struct {
	// Node is this node's name, as in the pods' spec.nodeName.
	Node string
	// Client reads pod and namespace labels; nil: membership comes from
	// the CNI plugin's arguments (Sandbox.Service) alone.
	Client kubernetes.Interface
	// Enroller is the agent.
	Enroller Enroller
	// StateDir keeps the sandboxes (StateDir/cni).
	StateDir string
	// FindNetns finds the netns of a pod the CNI plugin never reported
	// (it started before the agent), by its IP; nil: such pods are left.
	FindNetns func(ip netip.Addr) (string, error)
	// Grace keeps a sandbox whose pod the informer does not show (yet);
	// default 1m.
	Grace time.Duration
	// AddWait bounds how long a CNI ADD waits for the informer to show
	// the pod; default 3s.
	AddWait time.Duration
	// Resync retries failed enrollments; default 30s.
	Resync time.Duration
	// Log receives decisions; default slog.Default().
	Log *slog.Logger
}

// Reconciler keeps the agent's enrollments equal to the membership
// decisions for the pods of its node.
type Reconciler struct {
	cfg  Config
	w    *watcher // nil without Client
	kick chan struct{}

	mu        sync.Mutex         // guards the fields below; held across Enroller calls, so decisions never interleave
	sandboxes map[string]Sandbox // by netns path
}

// New loads the persisted sandboxes; it starts nothing.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Enroller == nil || cfg.StateDir == "" {
		return nil, errors.New("kube: Enroller and StateDir are required")
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Minute
	}
	if cfg.AddWait == 0 {
		cfg.AddWait = 3 * time.Second
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	sbs, err := loadSandboxes(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{cfg: cfg, kick: make(chan struct{}, 1), sandboxes: sbs}
	if cfg.Client != nil {
		if cfg.Node == "" {
			return nil, errors.New("kube: Node is required with a Kubernetes client")
		}
		if r.w, err = newWatcher(cfg.Client, cfg.Node, 10*time.Minute, r.changed); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (r *Reconciler) changed() {
	select {
	case r.kick <- struct{}{}:
	default: // one pending reconcile covers every change before it
	}
}

// Run fills the informers' caches, reconciles every pod of the node once
// (pods that started before the agent are enrolled then), and again on
// every change and every Resync, until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	if r.w != nil && !r.w.run(ctx) {
		return ctx.Err()
	}
	r.Reconcile()
	t := time.NewTicker(r.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-t.C:
		}
		r.Reconcile()
	}
}

// Synced reports whether membership can be decided: always without a
// Kubernetes client, else once the informers' caches are filled.
func (r *Reconciler) Synced() bool { return r.w == nil || r.w.hasSynced() }

// Reconcile applies the current decisions once.
func (r *Reconciler) Reconcile() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.Synced() {
		return
	}
	dirty := r.discoverLocked()
	enrolled := r.cfg.Enroller.Enrollments()
	for path, sb := range r.sandboxes {
		if _, err := os.Stat(path); err != nil {
			r.cfg.Log.Info("pod's netns is gone; dropping it", "netns", path, "pod", sb.Namespace+"/"+sb.Name)
			r.unenrollIf(enrolled, path)
			delete(r.sandboxes, path)
			dirty = true
			continue
		}
		want, known := r.decideLocked(sb)
		if !known {
			if time.Since(sb.Seen) > r.cfg.Grace {
				r.cfg.Log.Info("pod no longer in the API; unenrolling", "netns", path, "pod", sb.Namespace+"/"+sb.Name)
				r.unenrollIf(enrolled, path)
				delete(r.sandboxes, path)
				dirty = true
			}
			continue
		}
		r.applyLocked(sb, want, enrolled)
	}
	if dirty {
		r.saveLocked()
	}
}

// discoverLocked records the sandboxes of running pods the CNI plugin
// never reported: they started before the agent (or before its plugin
// was installed). It reports whether it found any.
func (r *Reconciler) discoverLocked() bool {
	if r.w == nil || r.cfg.FindNetns == nil {
		return false
	}
	known := map[string]bool{}
	for _, sb := range r.sandboxes {
		known[sb.UID] = true
		known[sb.Namespace+"/"+sb.Name] = true
	}
	found := false
	for _, p := range r.w.podsOnNode() {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || p.Spec.HostNetwork || known[string(p.UID)] || known[p.Namespace+"/"+p.Name] {
			continue
		}
		if !Decide(p, r.w.namespace(p.Namespace)).Member {
			continue // looked up again when its labels change
		}
		path, err := r.cfg.FindNetns(ip)
		if err != nil || path == "" {
			r.cfg.Log.Warn("no netns found for a pod of this node", "pod", p.Namespace+"/"+p.Name, "ip", ip, "error", err)
			continue
		}
		r.sandboxes[path] = Sandbox{UID: string(p.UID), Name: p.Name, Namespace: p.Namespace, Netns: path, IP: ip, Seen: time.Now()}
		found = true
	}
	return found
}

// decideLocked returns the decision for sb; known is false when the
// Kubernetes API has no pod for it.
func (r *Reconciler) decideLocked(sb Sandbox) (Want, bool) {
	if r.w == nil {
		if sb.Service == "" {
			return Want{Reason: "no service named (HMS_SERVICE in CNI_ARGS) and no Kubernetes API configured"}, true
		}
		ns := sb.Namespace
		if ns == "" {
			ns = "default"
		}
		return Want{Member: true, Service: sb.Service, Namespace: ns, Ports: sortedPorts(sb.Ports)}, true
	}
	p := r.w.pod(sb)
	if p == nil {
		return Want{Reason: "the agent's informer does not show the pod (yet)"}, false
	}
	if p.DeletionTimestamp != nil {
		// A terminating pod keeps what it has until its DEL: its
		// connections drain through the mesh as they started.
		return Want{}, false
	}
	return Decide(p, r.w.namespace(p.Namespace)), true
}

// applyLocked makes one sandbox's enrollment match want. An enrollment
// that already matches is not touched.
func (r *Reconciler) applyLocked(sb Sandbox, want Want, enrolled map[string]Enrollment) error {
	cur, ok := enrolled[sb.Netns]
	switch {
	case want.Member && ok && want.same(cur):
		return nil
	case want.Member:
		if ok {
			r.cfg.Log.Info("pod's membership changed; re-enrolling", "netns", sb.Netns, "from", cur.Namespace+"/"+cur.Service, "to", want.Namespace+"/"+want.Service)
			if err := r.cfg.Enroller.Unenroll(sb.Netns); err != nil {
				return fmt.Errorf("unenroll %s: %w", sb.Netns, err)
			}
		}
		if err := r.cfg.Enroller.Enroll(sb.Netns, want.Service, want.Namespace, want.Ports); err != nil {
			r.cfg.Log.Warn("enroll pod", "netns", sb.Netns, "pod", sb.Namespace+"/"+sb.Name, "error", err)
			return err
		}
		r.cfg.Log.Info("pod joined the mesh", "netns", sb.Netns, "pod", sb.Namespace+"/"+sb.Name, "service", want.Namespace+"/"+want.Service)
	case ok:
		r.cfg.Log.Info("pod left the mesh", "netns", sb.Netns, "pod", sb.Namespace+"/"+sb.Name, "why", want.Reason)
		return r.cfg.Enroller.Unenroll(sb.Netns)
	}
	return nil
}

func (r *Reconciler) unenrollIf(enrolled map[string]Enrollment, path string) {
	if _, ok := enrolled[path]; ok {
		if err := r.cfg.Enroller.Unenroll(path); err != nil {
			r.cfg.Log.Warn("unenroll pod", "netns", path, "error", err)
		}
	}
}

func (r *Reconciler) saveLocked() {
	if err := saveSandboxes(r.cfg.StateDir, r.sandboxes); err != nil {
		r.cfg.Log.Error("persist CNI sandboxes", "error", err)
	}
}
