package l7

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/resilience"
	"github.com/hms-node/hms-node/pkg/api"
)

// Route overrides the service's timeout and retries for one path prefix.
type Route struct {
	Path    string
	Timeout time.Duration // 0 = the service's
	Retries int           // -1 = the service's
}

// Policy is how requests to one destination service are sent, read for
// every request so that a registry change applies to open connections.
type Policy struct {
	Retries         int
	Timeout         time.Duration // 0 = none
	Routes          []Route       // the longest matching prefix wins
	BreakerFailures int           // 0 = no circuit breaker
	BreakerReset    time.Duration
}

// route applies the route matching path: timeout, retries, and whether
// the route asked for retries itself (which allows retrying non-idempotent
// methods on 5xx).
func (p Policy) route(path string) (timeout time.Duration, retries int, explicit bool) {
	timeout, retries = p.Timeout, p.Retries
	best := -1
	for _, r := range p.Routes {
		if strings.HasPrefix(path, r.Path) && len(r.Path) > best {
			best = len(r.Path)
			if r.Timeout > 0 {
				timeout = r.Timeout
			}
			explicit = r.Retries >= 0
			if explicit {
				retries = r.Retries
			}
		}
	}
	return timeout, retries, explicit
}

// Source is the calling workload.
type Source struct {
	Workload  string // "ns/svc"
	Principal string // SPIFFE ID; empty without identities
	Security  string // connection_security_policy: "mutual_tls" or "none"
}

// Destination is the service a client connection reaches.
type Destination struct {
	Namespace, Service string
	Principal          string // its SPIFFE ID
	Policy             func() Policy
	// Pick chooses a healthy endpoint not in tried; done reports the
	// attempt (err non-nil = the endpoint failed it).
	Pick func(tried []netip.AddrPort) (ep netip.AddrPort, done func(err error, latency time.Duration), ok bool)
}

func (d *Destination) key() string { return d.Namespace + "/" + d.Service }

// Sender sends a request to one endpoint: in-process on this node or
// over an HBONE stream. Connect failures are wrapped in *ConnectError.
type Sender interface {
	RoundTrip(req *http.Request, ep netip.AddrPort) (*http.Response, error)
}

// ConnectError is a failure to reach an endpoint: nothing was sent, so
// the request may go to another endpoint whatever its method.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return "connect: " + e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// Client is the calling side of the L7 proxy, shared by a node's pods.
type Client struct {
	Node     string
	Breakers *resilience.Breakers
	Budgets  *resilience.Budgets
	// Record receives every request (reporter "source"); may be nil.
	Record func(*api.Call)
	// OnRetry and OnBudgetExhausted count retries for metrics; may be nil.
	OnRetry           func(dst string)
	OnBudgetExhausted func(dst string)
	Log               *slog.Logger
}

// ServeConn serves one application connection to dst as HTTP until it
// closes.
func (cl *Client) ServeConn(c net.Conn, src Source, dst *Destination, send Sender) {
	serveLoop(c, &outbound{cl: cl, src: src, dst: dst, key: dst.key(), send: send}, clientIdleTimeout, cl.Log)
}

// outbound handles the requests of one application connection.
type outbound struct {
	cl   *Client
	src  Source
	dst  *Destination
	key  string // dst.key(), made once rather than per request
	send Sender
}

func (o *outbound) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	call := &api.Call{
		TimeUnixNano: start.UnixNano(), Reporter: "source", Node: o.cl.Node,
		SourcePrincipal: o.src.Principal, SourceWorkload: o.src.Workload,
		DestinationService: o.key, DestinationPrincipal: o.dst.Principal,
		ConnectionSecurityPolicy: o.src.Security,
		Method:                   r.Method, Path: r.URL.Path, Protocol: protocolOf(r),
		TraceId: traceHeaders(r.Header),
	}
	sw := &statusWriter{ResponseWriter: w}
	body := &countingBody{ReadCloser: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	flags, aborted := o.serve(sw, r, call)
	if sw.status == 0 {
		sw.status = http.StatusBadGateway // the handler wrote nothing: net/http answers nothing useful either
	}
	call.Status, call.Flags = uint32(sw.status), flags
	if call.Protocol == protoGRPC {
		call.GrpcStatus = grpcStatus(sw.Header(), nil) // the trailers are in the header map by now
	}
	call.LatencyUs = time.Since(start).Microseconds()
	call.RequestBytes, call.ResponseBytes = body.n, sw.bytes
	if o.cl.Record != nil {
		o.cl.Record(call)
	}
	if aborted {
		panic(http.ErrAbortHandler) // the connection's end tells the client the answer is cut short
	}
}

// serve sends r (with retries) and answers w; it returns the response
// flags, and whether the answer broke off mid-body.
func (o *outbound) serve(w *statusWriter, r *http.Request, call *api.Call) (string, bool) {
	pol := o.dst.Policy()
	timeout, retries, explicit := pol.route(r.URL.Path)
	var br *resilience.Breaker
	trial := false
	if pol.BreakerFailures > 0 && o.cl.Breakers != nil {
		br = o.cl.Breakers.Get(o.key, pol.BreakerFailures, pol.BreakerReset)
		var ok bool
		if ok, trial = br.Allow(); !ok {
			w.Header().Set(HeaderCircuit, "open")
			w.Header().Set("Retry-After", retryAfter(br.RetryAfter()))
			http.Error(w, "circuit open for "+o.key, http.StatusServiceUnavailable)
			return "UO", false
		}
	}
	ctx := r.Context()
	if timeout > 0 {
		var cancel func()
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	at := &attempts{o: o, retries: retries, explicit: explicit, timeout: timeout}
	if forwardable(r) {
		if timeout > 0 {
			r = r.WithContext(ctx)
		}
		forward(w, r, at)
	} else {
		outboundProxy.ServeHTTP(w, r.WithContext(context.WithValue(ctx, attemptsKey{}, at)))
	}
	call.Endpoint, call.Retries = at.endpoint, uint32(at.retried)
	// Failures are what answered 5xx (connect errors 503, timeouts 504);
	// no healthy endpoint is not one, and a client that left says nothing.
	if br != nil && at.flags != "UH" && at.flags != "DC" {
		br.Done(w.status < 500, trial)
	}
	switch {
	case at.flags != "":
		return at.flags, at.aborted
	case at.retried > 0 && w.status >= 500:
		return "URX", at.aborted
	}
	return "-", at.aborted
}

// outboundProxy is the calling side's one ReverseProxy: what differs per
// request (policy, endpoints, results) is the request's *attempts, carried
// in its context, so nothing is built per request but that.
var outboundProxy = &httputil.ReverseProxy{
	Rewrite: func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme = "http"
		pr.Out.Host = pr.In.Host // the application's Host, not the endpoint
	},
	Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return attemptsOf(req).RoundTrip(req)
	}),
	ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
		attemptsOf(r).errorHandler(w, r, err)
	},
	ErrorLog:   discardLog,
	BufferPool: &proxyBuffers,
}

type attemptsKey struct{}

func attemptsOf(r *http.Request) *attempts { return r.Context().Value(attemptsKey{}).(*attempts) }

// retryAfter formats a wait for the Retry-After header (whole seconds,
// at least 1).
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second)))
}

// Handler is the calling side for one request stream without a client
// connection of its own (hms-node curl from the host).
func (cl *Client) Handler(src Source, dst *Destination, send Sender) http.Handler {
	return &outbound{cl: cl, src: src, dst: dst, key: dst.key(), send: send}
}
