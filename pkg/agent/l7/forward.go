package l7

import (
	"io"
	"net/http"
	"strings"
)

// The calling side forwards its common request — HTTP/1.x, no body, no
// upgrade, an idempotent method — itself rather than through
// httputil.ReverseProxy: the request the loop parsed is sent as it is
// (ReverseProxy deep-copies it, headers and all) and the response's
// header map becomes the answer's (ReverseProxy copies it key by key).
// Everything else (bodies, upgrades, h2c, Connection: close) still goes
// through outboundProxy, whose semantics this path keeps: hop-by-hop
// headers dropped both ways, no Go User-Agent added, trailers announced
// and forwarded, bodies of unknown length flushed as they arrive.

// forwardable tells whether r takes the direct path. It is the l7
// Transport's fast path seen from the server side: a request the
// transport sends in the caller's goroutine, so nothing is gained by the
// copy ReverseProxy makes for its own goroutines.
func forwardable(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.Close || r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return false
	}
	if r.Body != nil && r.Body != http.NoBody {
		return false
	}
	if _, ok := r.Header["Upgrade"]; ok {
		return false
	}
	if _, ok := r.Header["Expect"]; ok {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// forward sends r (owned by the caller's loop, changed in place) through
// at and writes the answer to w.
func forward(w http.ResponseWriter, r *http.Request, at *attempts) {
	removeHopByHop(r.Header)
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = []string{""} // no Go default towards the application
	}
	r.URL.Scheme, r.RequestURI = "http", ""
	resp, err := at.RoundTrip(r)
	if err != nil {
		at.errorHandler(w, r, err)
		return
	}
	defer resp.Body.Close()
	removeHopByHop(resp.Header)
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	if len(resp.Trailer) > 0 {
		names := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyBody(w, resp); err != nil {
		// The client or the endpoint left mid-body: the answer must not
		// end as if complete, so the connection is aborted once the call
		// is recorded.
		at.aborted = true
		return
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
}

// copyBody copies resp's body to w, flushing after every read when its
// length is unknown (a stream), as ReverseProxy does.
func copyBody(w http.ResponseWriter, resp *http.Response) error {
	buf := proxyBuffers.Get()
	defer proxyBuffers.Put(buf)
	if resp.ContentLength >= 0 {
		_, err := io.CopyBuffer(w, readerOnly{resp.Body}, buf)
		return err
	}
	rc := http.NewResponseController(w) // reaches the Flush under statusWriter
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
