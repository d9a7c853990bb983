package control

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// StatsWindow is the window agents send their Stats over. An edge's
// request rate is Requests / (window_ms / 1000), which for MeshStats is
// Requests / StatsWindow.Seconds().
const StatsWindow = 5 * time.Second

// staleWindows: a node whose latest Stats is older than this many of its
// windows is left out of MeshStats.
const staleWindows = 3

// meshStats keeps the latest Stats of each node, in memory only: it is a
// live view, rebuilt within one window after a restart.
type meshStats struct {
	now func() time.Time

	// mu guards the fields below.
	mu     sync.Mutex
	byNode map[string]nodeStats
}

type nodeStats struct {
	at    time.Time
	stats *api.Stats
}

func newMeshStats() *meshStats {
	return &meshStats{now: time.Now, byNode: map[string]nodeStats{}}
}

// put records node's latest Stats.
func (m *meshStats) put(node string, st *api.Stats) {
	if st == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byNode[node] = nodeStats{at: m.now(), stats: st}
}

// MeshStats is the dashboard's live view: the edges of every node's latest
// window merged (an edge seen by several nodes' agents sums its requests
// and errors and keeps the highest p99, an upper bound of the merged p99),
// and the circuits and certificate expiries by node. Nodes that sent no
// Stats for 3 windows are left out (and forgotten). Agents send a window
// every StatsWindow, so an edge's rate is Requests / StatsWindow.Seconds().
// Only the agents connected to this replica are seen.
func (s *Server) MeshStats() (edges []*api.EdgeStats, circuits map[string][]*api.CircuitStatus, certs map[string][]*api.CertStatus) {
	return s.stats.merged()
}

func (m *meshStats) merged() ([]*api.EdgeStats, map[string][]*api.CircuitStatus, map[string][]*api.CertStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	circuits, certs := map[string][]*api.CircuitStatus{}, map[string][]*api.CertStatus{}
	byEdge := map[[2]string]*api.EdgeStats{}
	for node, ns := range m.byNode {
		window := time.Duration(ns.stats.GetWindowMs()) * time.Millisecond
		if window <= 0 {
			window = StatsWindow
		}
		if now.Sub(ns.at) > staleWindows*window {
			delete(m.byNode, node)
			continue
		}
		for _, e := range ns.stats.GetEdges() {
			k := [2]string{e.GetSource(), e.GetDestination()}
			if acc := byEdge[k]; acc != nil {
				acc.Requests += e.GetRequests()
				acc.Errors += e.GetErrors()
				acc.P99Ms = max(acc.P99Ms, e.GetP99Ms())
			} else {
				byEdge[k] = proto.Clone(e).(*api.EdgeStats)
			}
		}
		if len(ns.stats.GetCircuits()) > 0 {
			circuits[node] = ns.stats.GetCircuits()
		}
		if len(ns.stats.GetCerts()) > 0 {
			certs[node] = ns.stats.GetCerts()
		}
	}
	edges := make([]*api.EdgeStats, 0, len(byEdge))
	for _, e := range byEdge {
		edges = append(edges, e)
	}
	slices.SortFunc(edges, func(a, b *api.EdgeStats) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Destination, b.Destination))
	})
	return edges, circuits, certs
}

// TapCalls is the relay behind Registry.Tap, for the dashboard: each gets
// the recent calls of req's service (at most req.Last, oldest first) from
// the agents connected to this replica, then, with req.Follow, the live
// ones until ctx ends. It returns nil when a tap without follow is done,
// ctx's error when ctx ends, and each's error when each fails.
func (s *Server) TapCalls(ctx context.Context, req *api.TapRequest, each func(*api.Call) error) error {
	return s.taps.run(ctx, req, nil, each)
}

// headerTapAgents tells the CLI how many agents a Tap asked and how many
// answered in time, as "answered/asked".
const headerTapAgents = "hms-tap-agents"

// Tap streams the calls of a service; see TapCalls.
func (r *registryService) Tap(req *api.TapRequest, stream grpc.ServerStreamingServer[api.Call]) error {
	ctx := stream.Context()
	ns := req.GetNamespace()
	if ns == "" {
		ns = defaultNamespace
	}
	if err := checkService(ns, req.GetService()); err != nil {
		return status.Errorf(codes.InvalidArgument, "tap: %v", err)
	}
	octx, cancel := r.st.opCtx(ctx)
	got, err := r.st.cli.Get(octx, serviceKey(ns, req.GetService()), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return storeErr(ctx, err, false)
	}
	if got.Count == 0 {
		return status.Errorf(codes.NotFound, "service %s/%s does not exist (hms-node list shows the services)", ns, req.GetService())
	}
	err = r.taps.run(ctx, req, func(asked, answered int) {
		stream.SendHeader(metadata.Pairs(headerTapAgents, fmt.Sprintf("%d/%d", answered, asked)))
	}, stream.Send)
	if ctx.Err() != nil {
		return nil // the caller went: a following tap's normal end
	}
	return err
}
