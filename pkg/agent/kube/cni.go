package kube

import (
	"errors"
	"fmt"
	"time"
)

// Add is a CNI ADD: it records the sandbox and, when the decision can be
// made now, applies it before the pod's containers start, so their first
// connection is already meshed. The informer may lag the runtime by a
// moment; Add waits up to AddWait for it, then leaves the pod to the next
// reconcile (which runs when the informer shows it).
func (r *Reconciler) Add(sb Sandbox) (Want, bool, error) {
	if sb.Netns == "" {
		return Want{}, false, errors.New("CNI ADD without a network namespace")
	}
	sb.Seen = time.Now()
	deadline := time.Now().Add(r.cfg.AddWait)
	for {
		r.mu.Lock()
		r.sandboxes[sb.Netns] = sb
		want, known := Want{}, false
		if r.Synced() {
			want, known = r.decideLocked(sb)
		}
		if known || time.Now().After(deadline) {
			defer r.mu.Unlock()
			r.saveLocked()
			if !known {
				return Want{Reason: "the pod is not in the agent's view of the API yet; it is enrolled as soon as it is"}, false, nil
			}
			err := r.applyLocked(sb, want, r.cfg.Enroller.Enrollments())
			_, enrolled := r.cfg.Enroller.Enrollments()[sb.Netns]
			return want, enrolled, err
		}
		r.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
}

// Del is a CNI DEL: the pod leaves the mesh and is forgotten. A DEL for a
// sandbox the agent does not know is fine (DEL is idempotent).
func (r *Reconciler) Del(sb Sandbox) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	path := r.findLocked(sb)
	if path == "" {
		return nil
	}
	delete(r.sandboxes, path)
	r.saveLocked()
	if _, ok := r.cfg.Enroller.Enrollments()[path]; ok {
		return r.cfg.Enroller.Unenroll(path)
	}
	return nil
}

// Check is a CNI CHECK: a pod that should be in the mesh must be enrolled,
// as decided, and intact in the datapath.
func (r *Reconciler) Check(sb Sandbox) (Want, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	path := r.findLocked(sb)
	if path == "" {
		return Want{}, fmt.Errorf("the agent has no record of sandbox %s (netns %s): was its ADD missed?", sb.ContainerID, sb.Netns)
	}
	want, known := r.decideLocked(r.sandboxes[path])
	if !known || !want.Member {
		return want, nil
	}
	cur, ok := r.cfg.Enroller.Enrollments()[path]
	switch {
	case !ok:
		return want, fmt.Errorf("%s should be in the mesh as %s/%s but is not enrolled", path, want.Namespace, want.Service)
	case cur.Degraded:
		return want, fmt.Errorf("%s is enrolled but degraded (the agent could not restore it)", path)
	case !want.same(cur):
		return want, fmt.Errorf("%s is enrolled as %s/%s %v, want %s/%s %v", path, cur.Namespace, cur.Service, cur.Ports, want.Namespace, want.Service, want.Ports)
	}
	return want, r.cfg.Enroller.Verify(path)
}

// findLocked returns the netns path of a sandbox known by path or by
// container id.
func (r *Reconciler) findLocked(sb Sandbox) string {
	if _, ok := r.sandboxes[sb.Netns]; ok && sb.Netns != "" {
		return sb.Netns
	}
	if sb.ContainerID != "" {
		for path, known := range r.sandboxes {
			if known.ContainerID == sb.ContainerID {
				return path
			}
		}
	}
	return ""
}
