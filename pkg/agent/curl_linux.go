package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/api"
)

// CurlRequest is `hms-node curl SVC PATH`: one request through the mesh,
// sent as one of this node's workloads (its identity, its policy).
type CurlRequest struct {
	Service   string            `json:"service"`
	Namespace string            `json:"namespace"`
	Path      string            `json:"path"`
	Method    string            `json:"method"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      string            `json:"body,omitempty"`
	// From is the calling workload's service ("svc" or "ns/svc"); empty:
	// the first workload enrolled on this node.
	From string `json:"from,omitempty"`
}

// CurlResult is the answer, with what the proxy recorded of the call.
type CurlResult struct {
	Status   int                 `json:"status"`
	Headers  map[string][]string `json:"headers"`
	Body     string              `json:"body"`
	From     string              `json:"from"`
	Endpoint string              `json:"endpoint,omitempty"`
	Retries  uint32              `json:"retries"`
	Flags    string              `json:"flags"`
	TraceID  string              `json:"trace_id"`
	Latency  float64             `json:"latency_ms"`
}

// curlBodyLimit bounds the answer kept for the CLI.
const curlBodyLimit = 1 << 20

// Curl sends one HTTP request to a mesh service as a workload of this node.
func (a *Agent) Curl(ctx context.Context, req CurlRequest) (CurlResult, error) {
	ns := req.Namespace
	if ns == "" {
		ns = "default"
	}
	svc := a.table.Service(ns, req.Service)
	if svc == nil {
		return CurlResult{}, fmt.Errorf("no service %s/%s in the registry (hms-node list shows them)", ns, req.Service)
	}
	p, err := a.curlSource(req.From)
	if err != nil {
		return CurlResult{}, err
	}
	path := req.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, method, "http://"+req.Service+"."+ns+".svc"+path, strings.NewReader(req.Body))
	if err != nil {
		return CurlResult{}, fmt.Errorf("%v", err)
	}
	hr.RequestURI = hr.URL.RequestURI()
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	if len(svc.Ports) == 0 {
		return CurlResult{}, fmt.Errorf("%s/%s declares no port", ns, req.Service)
	}
	tgt := registry.Target{Service: svc, Port: uint16(svc.Ports[0])}
	var call *api.Call
	out := *a.httpOut
	out.Record = func(c *api.Call) { call = c; a.recordCall(c) }
	rec := httptest.NewRecorder()
	out.Handler(a.sourceOf(p), a.destinationOf(tgt), &httpSender{a: a, p: p, ns: ns, svc: req.Service, port: tgt.Port}).ServeHTTP(rec, hr)
	res := CurlResult{Status: rec.Code, Headers: rec.Header(), From: p.spec.Namespace + "/" + p.spec.Service}
	body := rec.Body.Bytes()
	res.Body = string(body[:min(len(body), curlBodyLimit)])
	if call != nil {
		res.Endpoint, res.Retries, res.Flags, res.TraceID = call.Endpoint, call.Retries, call.Flags, call.TraceId
		res.Latency = float64(call.LatencyUs) / 1000
	}
	return res, nil
}

// curlSource is the pod a host call is sent as.
func (a *Agent) curlSource(from string) (*pod, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]string, 0, len(a.pods))
	for k := range a.pods {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := a.pods[k]
		id := p.spec.Namespace + "/" + p.spec.Service
		if from == "" || from == p.spec.Service || from == id {
			return p, nil
		}
	}
	if from == "" {
		return nil, fmt.Errorf("no workload is enrolled on this node to call from; enroll one (hms-node enroll) or run hms-node dev")
	}
	return nil, fmt.Errorf("no workload of %q is enrolled on this node (--from)", from)
}

func (a *Agent) curlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/curl", func(w http.ResponseWriter, r *http.Request) {
		var req CurlRequest
		if !decode(w, r, &req) {
			return
		}
		res, err := a.Curl(r.Context(), req)
		if err != nil {
			localapi.WriteError(w, codeOf(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	})
}
