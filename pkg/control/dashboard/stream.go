package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hms-node/hms-node/pkg/api"
)

// sse writes Server-Sent Events.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// startSSE sends the event-stream headers; the page's EventSource
// reconnects by itself after the retry delay when a stream ends.
func startSSE(w http.ResponseWriter) (*sse, error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // a reverse proxy in front must not buffer
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return nil, err
	}
	return s, s.rc.Flush()
}

// send writes one event whose data is v as JSON (one line: JSON escapes
// newlines).
func (s *sse) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// serveEvents streams the overview every Interval until the client goes
// or the server shuts down.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	s, err := startSSE(w)
	if err != nil {
		return
	}
	tick := time.NewTicker(h.cfg.Interval)
	defer tick.Stop()
	for {
		if err := s.send("overview", h.overview(r.Context())); err != nil {
			return
		}
		select {
		case <-tick.C:
		case <-r.Context().Done():
			return
		case <-h.cfg.Done:
			return
		}
	}
}

// tapStatus is the tap stream's "status" event.
type tapStatus struct {
	State   string `json:"state"` // "following", "ended", "error"
	Message string `json:"message,omitempty"`
}

// serveTap streams one service's calls: ?service=ns/name (or name, in
// namespace default) and ?last=N recent calls first (default 50).
func (h *Handler) serveTap(w http.ResponseWriter, r *http.Request) {
	req, err := tapRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s, err := startSSE(w)
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-h.cfg.Done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := s.send("status", tapStatus{State: "following"}); err != nil {
		return
	}
	err = h.cfg.Source.TapCalls(ctx, req, func(c *api.Call) error { return s.send("call", callView(c)) })
	switch {
	case r.Context().Err() != nil:
		return // the page went away
	case err == nil || errors.Is(err, context.Canceled):
		s.send("status", tapStatus{State: "ended"})
	default:
		h.cfg.Log.Info("dashboard tap ended", "service", req.Namespace+"/"+req.Service, "error", err)
		s.send("status", tapStatus{State: "error", Message: err.Error()})
	}
}

func tapRequest(r *http.Request) (*api.TapRequest, error) {
	q := r.URL.Query()
	svc := q.Get("service")
	if svc == "" {
		return nil, errors.New("tap: give ?service=NAMESPACE/NAME")
	}
	ns, name, ok := strings.Cut(svc, "/")
	if !ok {
		ns, name = "default", svc
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, fmt.Errorf("tap: service %q is not NAMESPACE/NAME", svc)
	}
	last := 50
	if v := q.Get("last"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxTapLast {
			return nil, fmt.Errorf("tap: last=%q: give a count from 0 to %d", v, maxTapLast)
		}
		last = n
	}
	return &api.TapRequest{Namespace: ns, Service: name, Last: uint32(last), Follow: true}, nil
}

// Call is one tapped call, as the tap view shows it.
type Call struct {
	Time        time.Time `json:"time"`
	Reporter    string    `json:"reporter"`
	Node        string    `json:"node"`
	Source      string    `json:"source"`
	Destination string    `json:"destination"`
	Endpoint    string    `json:"endpoint"`
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	Status      uint32    `json:"status"`
	LatencyMs   float64   `json:"latency_ms"`
	Retries     uint32    `json:"retries"`
	Flags       string    `json:"flags"`
	TraceID     string    `json:"trace_id"`
	MTLS        bool      `json:"mtls"`
}

func callView(c *api.Call) Call {
	return Call{
		Time: time.Unix(0, c.GetTimeUnixNano()).UTC(), Reporter: c.GetReporter(), Node: c.GetNode(),
		Source: c.GetSourceWorkload(), Destination: c.GetDestinationService(), Endpoint: c.GetEndpoint(),
		Method: c.GetMethod(), Path: c.GetPath(), Status: c.GetStatus(), LatencyMs: float64(c.GetLatencyUs()) / 1000,
		Retries: c.GetRetries(), Flags: c.GetFlags(), TraceID: c.GetTraceId(),
		MTLS: c.GetConnectionSecurityPolicy() == "mutual_tls",
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}
