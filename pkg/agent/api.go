package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
	"github.com/hms-node/hms-node/pkg/agent/metrics"
	"github.com/hms-node/hms-node/pkg/datapath"
)

// Status is what `hms-node status -o json` prints (DESIGN §7's shape, with
// more fields).
type Status struct {
	Node          string         `json:"node"`
	Version       string         `json:"version"`
	UptimeSeconds int64          `json:"uptime_seconds"`
	Control       string         `json:"control"`           // one line for people
	Accepted      uint64         `json:"tunnels_accepted"`  // mTLS tunnels accepted
	Denied        uint64         `json:"denied"`            // tunnels refused (identity, policy)
	PlainRefused  uint64         `json:"plaintext_refused"` // plaintext refused by mtls: required
	Registry      *RegistryState `json:"registry,omitempty"`
	Workloads     []Workload     `json:"workloads"`
	Datapath      DatapathStatus `json:"datapath"`
	// KernelFeatures are the BPF hooks attached now ("cgroup/connect4", ...).
	KernelFeatures []string `json:"kernel_features"`
	// Circuits are the destinations ("ns/svc") whose circuit is not closed.
	Circuits map[string]string `json:"circuits"`
	// TopDestinations are the services this node's workloads called most
	// in the last minute, with their 5xx counts.
	TopDestinations []metrics.DestinationRate `json:"top_destinations"`
}

// Workload is one enrolled pod in Status.
type Workload struct {
	Netns      string   `json:"netns"`
	Service    string   `json:"service"`
	Namespace  string   `json:"namespace"`
	Identity   string   `json:"identity"`
	CertExpiry string   `json:"cert_expiry"`
	IP         string   `json:"ip,omitempty"`
	Ports      []uint16 `json:"ports,omitempty"`
	Cookie     uint64   `json:"netns_cookie"`
	State      string   `json:"state"` // "serving" or "degraded: <why>"
	Healthy    []uint16 `json:"healthy_ports,omitempty"`
	CertSerial string   `json:"cert_serial,omitempty"`
	// CertHealth is "ok", "expiring" (under a quarter of its life left:
	// renewals are failing), "expired" or "pending".
	CertHealth string `json:"cert_health,omitempty"`
}

// RegistryState is the agent's link to the control plane.
type RegistryState struct {
	Address   string    `json:"address"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since"`
	LastSync  time.Time `json:"last_sync"`
	Revision  int64     `json:"revision"`
	LastError string    `json:"last_error,omitempty"`
	Services  int       `json:"services"`
	// SyncAgeSeconds is how long ago a snapshot or delta was applied; -1
	// before the first.
	SyncAgeSeconds float64 `json:"sync_age_seconds"`
}

// DatapathStatus is the eBPF side of Status.
type DatapathStatus struct {
	PinPath     string                `json:"pin_path"`
	Accel       bool                  `json:"accel"`
	Counters    map[string]uint64     `json:"counters"`
	Attachments []datapath.Attachment `json:"attachments"`
}

// Status reports the agent's state.
func (a *Agent) Status() (Status, error) {
	counters, err := a.dp.Counters()
	if err != nil {
		return Status{}, err
	}
	st := Status{
		Node: a.cfg.Node, Version: a.cfg.Version, Control: "standalone (no control plane)",
		UptimeSeconds: int64(time.Since(a.started).Seconds()),
		Datapath: DatapathStatus{PinPath: a.dp.PinPath(), Accel: a.dp.Accel(),
			Counters: counters, Attachments: a.dp.Attachments()},
		Workloads: []Workload{},
		Accepted:  a.accepted.Load(), Denied: a.denied.Load(), PlainRefused: a.plaintextRefused.Load(),
		Circuits: a.metrics.Circuits(), TopDestinations: a.metrics.TopDestinations(topDestinations),
	}
	st.KernelFeatures = kernelFeatures(st.Datapath.Attachments, st.Datapath.Accel)
	if a.client != nil {
		cs := a.client.State()
		st.Registry = &RegistryState{Address: a.cfg.Control, Connected: cs.Connected, Since: cs.Since,
			LastSync: cs.LastSync, Revision: cs.Revision, LastError: cs.LastError, Services: a.table.Len(), SyncAgeSeconds: -1}
		if !cs.LastSync.IsZero() {
			st.Registry.SyncAgeSeconds = time.Since(cs.LastSync).Seconds()
		}
		if cs.Connected {
			st.Control = fmt.Sprintf("connected to %s, revision %d, last sync %s ago", a.cfg.Control, cs.Revision, time.Since(cs.LastSync).Round(time.Millisecond))
		} else {
			st.Control = fmt.Sprintf("DISCONNECTED from %s since %s (%s): serving the last known state", a.cfg.Control, cs.Since.Format(time.RFC3339), cs.LastError)
		}
	}
	a.mu.Lock()
	for _, p := range a.pods {
		w := workloadOf(p.spec, "serving")
		if id, leaf := p.certInfo(); leaf != nil {
			w.Identity, w.CertExpiry, w.CertSerial = id, leaf.NotAfter.UTC().Format(time.RFC3339), fmt.Sprintf("%x", leaf.SerialNumber)
			w.CertHealth = certHealth(leaf, time.Now())
		} else if id != "" {
			w.Identity, w.CertExpiry, w.CertHealth = id, "pending", "pending"
		}
		p.mu.Lock()
		for _, port := range p.spec.Ports {
			if p.healthy[port] {
				w.Healthy = append(w.Healthy, port)
			}
		}
		p.mu.Unlock()
		st.Workloads = append(st.Workloads, w)
	}
	for _, d := range a.degraded {
		st.Workloads = append(st.Workloads, workloadOf(d.spec, "degraded: "+d.err))
	}
	a.mu.Unlock()
	sort.Slice(st.Workloads, func(i, j int) bool { return st.Workloads[i].Netns < st.Workloads[j].Netns })
	return st, nil
}

// topDestinations is how many destinations status lists.
const topDestinations = 5

// kernelFeatures names the hooks of the attached links, in a fixed order;
// sk_msg (on the sockhash, not a link) while acceleration is on.
func kernelFeatures(atts []datapath.Attachment, accel bool) []string {
	have := map[string]bool{}
	for _, at := range atts {
		pin := strings.TrimPrefix(filepath.Base(at.Pin), "link_")
		pin, _, _ = strings.Cut(pin, "_") // sockops_agent_N, sklookup_<cookie>
		have[pin] = true
	}
	have["skmsg"] = accel
	var out []string
	for _, f := range [...]struct{ pin, name string }{
		{"connect4", "cgroup/connect4"}, {"connect6", "cgroup/connect6"},
		{"sendmsg4", "cgroup/sendmsg4"}, {"sendmsg6", "cgroup/sendmsg6"},
		{"recvmsg4", "cgroup/recvmsg4"}, {"recvmsg6", "cgroup/recvmsg6"},
		{"getpeername4", "cgroup/getpeername4"}, {"getpeername6", "cgroup/getpeername6"},
		{"sockops", "sockops"}, {"skmsg", "sk_msg+sockhash"}, {"sklookup", "sk_lookup"},
	} {
		if have[f.pin] {
			out = append(out, f.name)
		}
	}
	return out
}

// certHealth judges a certificate renewed at half-life.
func certHealth(leaf *x509.Certificate, now time.Time) string {
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		return "expired"
	case left < leaf.NotAfter.Sub(leaf.NotBefore)/4:
		return "expiring"
	}
	return "ok"
}

func workloadOf(s PodSpec, state string) Workload {
	w := Workload{Netns: s.Netns, Service: s.Service, Namespace: s.Namespace, Ports: s.Ports, Cookie: s.Cookie, State: state}
	if s.IP.IsValid() {
		w.IP = s.IP.String()
	}
	return w
}

// UnenrollRequest asks the agent to take a pod out of the mesh.
type UnenrollRequest struct {
	Netns string `json:"netns"`
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Status()
		if err != nil {
			localapi.WriteError(w, http.StatusInternalServerError, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /v1/enroll", func(w http.ResponseWriter, r *http.Request) {
		var req EnrollRequest
		if !decode(w, r, &req) {
			return
		}
		spec, err := a.Enroll(req)
		if err != nil {
			localapi.WriteError(w, codeOf(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, workloadOf(spec, "serving"))
	})
	mux.HandleFunc("POST /v1/unenroll", func(w http.ResponseWriter, r *http.Request) {
		var req UnenrollRequest
		if !decode(w, r, &req) {
			return
		}
		if err := a.Unenroll(req.Netns); err != nil {
			localapi.WriteError(w, codeOf(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /v1/dev", func(w http.ResponseWriter, r *http.Request) {
		var req DevRequest
		if !decode(w, r, &req) {
			return
		}
		dw, err := a.EnrollDev(req)
		if err != nil {
			localapi.WriteError(w, codeOf(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, dw)
	})
	mux.HandleFunc("POST /v1/dev/remove", func(w http.ResponseWriter, r *http.Request) {
		var req DevWorkload
		if !decode(w, r, &req) {
			return
		}
		if err := a.RemoveDev(req.ID); err != nil {
			localapi.WriteError(w, codeOf(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, struct{}{})
	})
	a.cniRoutes(mux)
	a.curlRoutes(mux)
	mux.HandleFunc("GET /v1/lookup", func(w http.ResponseWriter, r *http.Request) {
		res, err := a.Lookup(r.URL.Query().Get("name"))
		if err != nil {
			localapi.WriteError(w, http.StatusNotFound, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	})
	return mux
}

// LookupResult is what pkg/client's Discover returns: a service's mesh
// address and its healthy endpoints, from the agent's registry table.
type LookupResult struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	VIP       string   `json:"vip"`
	Ports     []uint32 `json:"ports"`
	Protocol  string   `json:"protocol"`
	Healthy   int      `json:"healthy_endpoints"`
}

// Lookup resolves "svc" or "svc.ns" in the agent's table.
func (a *Agent) Lookup(name string) (LookupResult, error) {
	svc, ns, _ := strings.Cut(name, ".")
	if ns == "" {
		ns = "default"
	}
	s := a.table.Service(ns, svc)
	if s == nil {
		return LookupResult{}, fmt.Errorf("no service %s/%s in the registry", ns, svc)
	}
	healthy := 0
	for _, in := range a.table.Endpoints(ns, svc) {
		if in.Healthy {
			healthy++
		}
	}
	return LookupResult{Name: s.Name, Namespace: s.Namespace, VIP: s.Vip, Ports: s.Ports, Protocol: s.Protocol, Healthy: healthy}, nil
}

func codeOf(err error) int {
	if errors.Is(err, ErrConflict) {
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		localapi.WriteError(w, http.StatusBadRequest, err)
		return false
	}
	return true
}

// apiServer is the local API plus the metrics/health endpoint.
type apiServer struct {
	local   *localapi.Server
	localLn *net.UnixListener
	health  *http.Server
	healthL net.Listener
}

func (s *apiServer) close(handedOver bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if handedOver {
		s.localLn.SetUnlinkOnClose(false) // the successor serves this path now
	}
	s.local.Shutdown(ctx)
	if s.health != nil {
		s.health.Shutdown(ctx)
	}
}
