package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// Source is what the dashboard shows. *control.Server implements it.
type Source interface {
	// Registry reads the registry now.
	Registry(ctx context.Context) (*Registry, error)
	// MeshStats is the agents' latest stats windows merged: edges between
	// "ns/svc" names, and circuits and certificate expiries by node.
	MeshStats() (edges []*api.EdgeStats, circuits map[string][]*api.CircuitStatus, certs map[string][]*api.CertStatus)
	// TapCalls passes the calls of req's service to each: the recent
	// ones, then, with req.Follow, the live ones until ctx ends.
	TapCalls(ctx context.Context, req *api.TapRequest, each func(*api.Call) error) error
}

// Registry is the registry at one revision.
type Registry struct {
	Revision  int64
	Services  []*api.Service
	Instances []*api.Instance
	Externals []*api.ExternalService
	Nodes     []*api.Node
	Limits    []*api.RateLimit
}

// Config configures a Handler. Only Source is required.
type Config struct {
	// Source is where the data comes from.
	Source Source
	// Log receives stream errors; default slog.Default().
	Log *slog.Logger
	// Window is the period an edge's counts cover; default 5s, the
	// agents' stats window. Rates are counts / Window.
	Window time.Duration
	// Interval is how often the live stream sends the overview; default
	// 1s.
	Interval time.Duration
	// Done, when closed, ends the live streams (the server shuts down);
	// nil: they end only with their requests.
	Done <-chan struct{}
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Handler serves the dashboard at the root of whatever prefix it is
// mounted under (http.StripPrefix): the page at "/", its files under
// "/static/", the data under "/api/". Links are relative.
type Handler struct {
	cfg Config
	mux *http.ServeMux

	// mu guards the fields below: every open page shares one registry
	// read per half Interval.
	mu     sync.Mutex
	last   *Overview
	lastAt time.Time // by the real clock, whatever Config.Now says
}

//go:embed static
var static embed.FS

// registryTimeout bounds one registry read.
const registryTimeout = 5 * time.Second

// maxTapLast bounds the recent calls a tap view asks for.
const maxTapLast = 500

// New returns the dashboard handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Source == nil {
		return nil, errors.New("dashboard: no source")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Window <= 0 {
		cfg.Window = 5 * time.Second
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	files, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("dashboard: embedded files: %w", err)
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, files, "index.html")
	})
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(files)))
	h.mux.HandleFunc("GET /api/overview", h.serveOverview)
	h.mux.HandleFunc("GET /api/events", h.serveEvents)
	h.mux.HandleFunc("GET /api/tap", h.serveTap)
	return h, nil
}

// ServeHTTP serves the page, its files and its data. Everything is
// same-origin: the page loads nothing from elsewhere.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// overview is the page's model, read again when the last one is older
// than half an Interval.
func (h *Handler) overview(ctx context.Context) *Overview {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.last != nil && time.Since(h.lastAt) < h.cfg.Interval/2 {
		return h.last
	}
	// Other pages wait for this read too: one page leaving must not
	// cancel it.
	h.last, h.lastAt = h.read(context.WithoutCancel(ctx)), time.Now()
	return h.last
}

// read reads the registry and the stats into the page's model.
func (h *Handler) read(ctx context.Context) *Overview {
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	reg, err := h.cfg.Source.Registry(ctx)
	edges, circuits, certs := h.cfg.Source.MeshStats()
	o := build(h.cfg.Now(), h.cfg.Window, reg, edges, circuits, certs)
	if err != nil {
		o.Errors = append(o.Errors, "registry unavailable: "+err.Error()+" (showing live stats only; is etcd reachable?)")
	}
	return o
}

func (h *Handler) serveOverview(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, h.overview(r.Context()))
}
