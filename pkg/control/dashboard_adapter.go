package control

import (
	"context"
	"net/http"

	"github.com/hms-node/hms-node/pkg/control/dashboard"
)

// dashboardSource is the dashboard's view of this replica: the live stats
// and taps of the Server (MeshStats, TapCalls), and the registry read from
// etcd on every request.
type dashboardSource struct {
	*Server
	st *store
}

var _ dashboard.Source = dashboardSource{}

// Registry reads the whole registry at one revision.
func (d dashboardSource) Registry(ctx context.Context) (*dashboard.Registry, error) {
	v, err := d.st.readAll(ctx)
	if err != nil {
		return nil, err
	}
	v.sortServices()
	return &dashboard.Registry{Revision: v.rev, Services: v.services, Instances: v.instances,
		Externals: v.externals, Nodes: v.nodes, Limits: v.limits}, nil
}

// mountDashboard serves the dashboard under /dashboard/ on the HTTP
// listener's mux, and sends / there. Its live streams end when the
// replica shuts down.
func (s *Server) mountDashboard(mux *http.ServeMux, st *store) {
	h, err := dashboard.New(dashboard.Config{Source: dashboardSource{Server: s, st: st}, Log: s.log,
		Window: StatsWindow, Done: s.taps.closing})
	if err != nil { // only without a source
		s.log.Error("dashboard not served", "err", err)
		return
	}
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", h))
	mux.Handle("GET /{$}", http.RedirectHandler("/dashboard/", http.StatusFound))
}
