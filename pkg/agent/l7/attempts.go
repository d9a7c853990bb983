package l7

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/netip"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/agent/resilience"
)

// Backoff between retries: full jitter up to base<<attempt, capped.
const (
	retryBase = 25 * time.Millisecond
	retryMax  = 250 * time.Millisecond
)

var (
	discardLog   = log.New(io.Discard, "", 0)
	errNoHealthy = errors.New("no healthy endpoint")
	// ErrDenied is the destination refusing the caller (policy, identity):
	// answered 403 and never retried, since every endpoint would refuse.
	ErrDenied = errors.New("l7: denied by the destination")
)

// attempts is the transport of one request: each try picks an endpoint
// (never one already tried, when another exists) and sends there;
// retryable failures are tried again under the destination's budget.
type attempts struct {
	o        *outbound
	retries  int
	explicit bool // the route set retries: 5xx retried whatever the method
	timeout  time.Duration

	// Results, read by outbound after the proxy returns.
	endpoint string
	retried  int
	flags    string
	aborted  bool // the answer broke off mid-body (forward)
}

func (at *attempts) RoundTrip(req *http.Request) (*http.Response, error) {
	dst := at.o.key
	var budget *resilience.Budget
	if at.o.cl.Budgets != nil {
		budget = at.o.cl.Budgets.Get(dst)
		budget.Deposit()
	}
	canReplay := at.retries > 0 && req.Header.Get("Upgrade") == "" && replayable(req)
	idempotent := isIdempotent(req.Method)
	var tried []netip.AddrPort
	for attempt := 0; ; attempt++ {
		ep, done, ok := at.o.dst.Pick(tried)
		if !ok {
			if attempt == 0 {
				return nil, errNoHealthy
			}
			ep, done, ok = at.o.dst.Pick(nil) // every endpoint tried: any healthy one again
			if !ok {
				return nil, errNoHealthy
			}
		}
		tried = append(tried, ep)
		at.endpoint = ep.String()
		req.URL.Host = at.endpoint
		if attempt > 0 {
			req.Body, _ = req.GetBody()
		}
		start := time.Now()
		resp, err := at.o.send.RoundTrip(req, ep)
		latency := time.Since(start)
		var connectErr *ConnectError
		isConnect := errors.As(err, &connectErr)
		switch {
		case errors.Is(err, ErrDenied):
			done(nil, latency) // policy, not a sick endpoint
		case err != nil:
			done(err, latency)
		case resp.StatusCode >= 500:
			done(registry.ErrServerError, latency) // consecutive ones eject the endpoint
		default:
			done(nil, latency)
			return resp, nil
		}
		retryable := err != nil && !errors.Is(err, ErrDenied) && (isConnect || idempotent) ||
			err == nil && retryableStatus(resp.StatusCode) && (idempotent || at.explicit)
		if !retryable || !canReplay || attempt >= at.retries || req.Context().Err() != nil {
			return resp, err
		}
		if budget != nil && !budget.Withdraw() {
			if at.o.cl.OnBudgetExhausted != nil {
				at.o.cl.OnBudgetExhausted(dst)
			}
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		if at.o.cl.OnRetry != nil {
			at.o.cl.OnRetry(dst)
		}
		at.retried++
		t := time.NewTimer(resilience.Backoff(attempt, retryBase, retryMax))
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return nil, req.Context().Err()
		}
	}
}

// errorHandler answers a request that got no response: 504 when its
// timeout expired, 503 when no endpoint is healthy or none could be
// reached, 502 otherwise.
func (at *attempts) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	var connectErr *ConnectError
	switch {
	case errors.Is(err, errNoHealthy):
		at.flags = "UH"
		w.Header().Set(HeaderNoHealthy, "true")
		http.Error(w, "no healthy endpoint of "+at.o.key, http.StatusServiceUnavailable)
	case errors.Is(err, ErrDenied):
		at.flags = "UAEX"
		http.Error(w, "denied by "+at.o.key, http.StatusForbidden)
	case at.timeout > 0 && errors.Is(err, context.DeadlineExceeded):
		at.flags = "UT"
		w.Header().Set(HeaderTimeout, at.timeout.String())
		http.Error(w, "upstream timeout ("+at.timeout.String()+")", http.StatusGatewayTimeout)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		at.flags = "DC" // the client went away
		w.WriteHeader(499)
	case errors.As(err, &connectErr):
		at.flags = "UF"
		http.Error(w, "upstream connect failed", http.StatusServiceUnavailable)
	default:
		at.flags = "UC"
		http.Error(w, "upstream connection failed", http.StatusBadGateway)
	}
}

func retryableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

func isIdempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}
