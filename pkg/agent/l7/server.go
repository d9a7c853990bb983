package l7

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/ratelimit"
	"github.com/hms-node/hms-node/pkg/api"
)

// Server is the called side of the L7 proxy, shared by a node's pods: it
// admits requests under the destination's rate limit and forwards them
// to the application.
type Server struct {
	Node   string
	Limits *ratelimit.Set
	// Record receives every request (reporter "destination"); may be nil.
	Record func(*api.Call)
	// OnRateLimited and OnQueued count rate limiting for metrics; may be nil.
	OnRateLimited func(dst string)
	OnQueued      func(dst string, wait time.Duration)
	Log           *slog.Logger // may be nil
}

// Local is a workload of this node that requests are delivered to.
type Local struct {
	Namespace, Service string
	Principal          string
	// Limit is the service's rate limit (0 = none) and its ready
	// instances mesh-wide, which share it evenly.
	Limit func() (rps float64, instances int)
	// App reaches the application (it dials 127.0.0.1:<port> in the pod).
	App http.RoundTripper
}

func (l *Local) key() string { return l.Namespace + "/" + l.Service }

// Caller identifies the calling workload of a request.
type Caller struct {
	Workload  string // "ns/svc"
	Principal string
	Security  string
	// Check, when set, runs before every request: a tunnel kept alive
	// outlives the checks made when it opened (a node revoked since, a
	// policy changed), so each request is authorized again.
	Check func() error
}

// RoundTrip delivers req to the application at port: a same-node call
// comes here in-process. A refused request gets a 429 response.
func (s *Server) RoundTrip(req *http.Request, dst *Local, caller Caller, port uint16) (*http.Response, error) {
	start := time.Now()
	call := &api.Call{
		TimeUnixNano: start.UnixNano(), Reporter: "destination", Node: s.Node,
		SourcePrincipal: caller.Principal, SourceWorkload: caller.Workload,
		DestinationService: dst.key(), DestinationPrincipal: dst.Principal,
		ConnectionSecurityPolicy: caller.Security,
		Method:                   req.Method, Path: req.URL.Path, Protocol: protocolOf(req),
		TraceId: req.Header.Get(HeaderTraceID), Flags: "-",
	}
	resp, err := s.admitAndSend(req, dst, caller, port, call)
	switch {
	case err != nil && errors.Is(err, errRefused):
	case err != nil:
		call.Flags = "UF"
		call.Status = http.StatusBadGateway
	default:
		call.Status = uint32(resp.StatusCode)
		if resp.ContentLength > 0 {
			call.ResponseBytes = resp.ContentLength
		}
	}
	if req.ContentLength > 0 {
		call.RequestBytes = req.ContentLength
	}
	record := func() {
		call.LatencyUs = time.Since(start).Microseconds()
		if s.Record != nil {
			s.Record(call)
		}
	}
	if err == nil && call.Protocol == protoGRPC {
		// A gRPC call's outcome is its grpc-status trailer, after the body.
		resp.Body = &grpcBody{ReadCloser: resp.Body, resp: resp, call: call, record: record}
		return resp, nil
	}
	record()
	if errors.Is(err, errRefused) {
		return resp, nil
	}
	return resp, err
}

var errRefused = errors.New("rate limited")

func (s *Server) admitAndSend(req *http.Request, dst *Local, caller Caller, port uint16, call *api.Call) (*http.Response, error) {
	if caller.Check != nil {
		if err := caller.Check(); err != nil {
			call.Flags, call.Status = "UAEX", http.StatusForbidden
			return plain(req, http.StatusForbidden, "denied: "+err.Error()+"\n", nil), errRefused
		}
	}
	if s.Limits != nil && dst.Limit != nil {
		if rps, n := dst.Limit(); rps > 0 {
			waited, ok, after := s.Limits.Limiter(dst.key(), rps, n).Wait(req.Context())
			if !ok {
				if s.OnRateLimited != nil {
					s.OnRateLimited(dst.key())
				}
				call.Flags, call.Status = "RL", http.StatusTooManyRequests
				return plain(req, http.StatusTooManyRequests, "rate limit exceeded\n", http.Header{"Retry-After": {retryAfter(after)}}), errRefused
			}
			if waited > 0 && s.OnQueued != nil {
				s.OnQueued(dst.key(), waited)
			}
		}
	}
	req.URL.Scheme = "http"
	req.URL.Host = appHost(port)
	return dst.App.RoundTrip(req)
}

// appHosts caches "127.0.0.1:<port>" per application port, which every
// request delivered to an application needs.
var appHosts sync.Map // uint16 → string

func appHost(port uint16) string {
	if h, ok := appHosts.Load(port); ok {
		return h.(string)
	}
	h := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	appHosts.Store(port, h)
	return h
}

// plain is a short text answer made by the proxy itself.
func plain(req *http.Request, code int, body string, h http.Header) *http.Response {
	if h == nil {
		h = http.Header{}
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return &http.Response{
		StatusCode: code, Status: strconv.Itoa(code) + " " + http.StatusText(code),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// AppTransport is a pod's transport to its own application: dial reaches
// 127.0.0.1:<port> inside the pod's netns.
func AppTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *Transport {
	return &Transport{
		Dial:           dial,
		MaxIdlePerHost: 256,
		IdleTimeout:    90 * time.Second,
		Fallback: &http.Transport{
			DialContext:           dial,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true, // pass bodies through as the application sent them
		},
		H2: H2CTransport(dial),
	}
}
