package kube

import (
	"net/netip"
	"path/filepath"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/state"
)

// Sandbox is a pod's network namespace as the CNI plugin reported it, or
// as found for a pod that started before the agent.
type Sandbox struct {
	UID         string     `json:"uid,omitempty"`
	Name        string     `json:"name,omitempty"`
	Namespace   string     `json:"namespace,omitempty"`
	ContainerID string     `json:"container_id,omitempty"`
	Netns       string     `json:"netns"`
	IP          netip.Addr `json:"ip"`
	// Seen is when the agent learnt of it: a sandbox younger than
	// Config.Grace whose pod the informer does not show yet is kept.
	Seen time.Time `json:"seen"`
	// Service and Ports are the CNI plugin's fallback membership, used
	// when no Kubernetes API is configured.
	Service string   `json:"service,omitempty"`
	Ports   []uint16 `json:"ports,omitempty"`
}

// Enrollment is one pod the agent serves, as the reconciler compares it.
type Enrollment struct {
	Service   string
	Namespace string
	Ports     []uint16
	// Degraded: persisted but not served (restore failed); re-enrolled.
	Degraded bool
}

// Enroller is the agent side: its enrollments and the calls that change
// them (the same ones `hms-node enroll` makes).
type Enroller interface {
	// Enrollments returns the pods the agent serves, by netns path.
	Enrollments() map[string]Enrollment
	Enroll(netns, service, namespace string, ports []uint16) error
	Unenroll(netns string) error
	// Verify checks that an enrollment is intact in the datapath.
	Verify(netns string) error
}

// sandboxFile is what the reconciler persists, in StateDir/cni, so a
// restarted agent still knows which netns holds which pod.
type sandboxFile struct {
	Version   int       `json:"version"`
	Sandboxes []Sandbox `json:"sandboxes"`
}

func sandboxDir(stateDir string) string { return filepath.Join(stateDir, "cni") }

func loadSandboxes(stateDir string) (map[string]Sandbox, error) {
	var f sandboxFile
	out := map[string]Sandbox{}
	if _, err := state.Load(sandboxDir(stateDir), &f); err != nil {
		return nil, err
	}
	for _, sb := range f.Sandboxes {
		out[sb.Netns] = sb
	}
	return out, nil
}

func saveSandboxes(stateDir string, m map[string]Sandbox) error {
	f := sandboxFile{Version: 1, Sandboxes: make([]Sandbox, 0, len(m))}
	for _, sb := range m {
		f.Sandboxes = append(f.Sandboxes, sb)
	}
	return state.Save(sandboxDir(stateDir), f)
}
