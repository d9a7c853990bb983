package l7

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// Trace headers (DESIGN §3): x-hms-trace-id is kept when the caller sent
// one, else derived from its traceparent, else new; traceparent keeps
// the caller's trace and gets a new parent id for this hop, or starts a
// trace.
const (
	HeaderTraceID     = "X-Hms-Trace-Id"
	headerTraceparent = "Traceparent"
)

// Headers the proxy answers with.
const (
	HeaderCircuit   = "X-Hms-Circuit"
	HeaderTimeout   = "X-Hms-Timeout"
	HeaderNoHealthy = "X-Hms-No-Healthy-Endpoint"
)

// traceHeaders sets both trace headers on h and returns the trace id.
func traceHeaders(h http.Header) string {
	traceID, flags, ok := parseTraceparent(h.Get(headerTraceparent))
	if !ok {
		traceID, flags = randomHex(16), "01"
	}
	h[headerTraceparent] = []string{traceparent(traceID, flags)}
	id := h.Get(HeaderTraceID)
	if id == "" {
		id = traceID
		h.Set(HeaderTraceID, id)
	}
	return id
}

// traceparent is "00-<trace id>-<new parent id>-<flags>", made in one
// buffer: it is built for every request.
func traceparent(traceID, flags string) string {
	var id [8]byte
	rand.Read(id[:])
	b := make([]byte, 0, 3+len(traceID)+1+16+1+len(flags))
	b = append(b, "00-"...)
	b = append(b, traceID...)
	b = append(b, '-')
	b = hex.AppendEncode(b, id[:])
	b = append(b, '-')
	b = append(b, flags...)
	return string(b)
}

// parseTraceparent accepts a W3C version-00 traceparent:
// 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>.
func parseTraceparent(v string) (traceID, flags string, ok bool) {
	if len(v) != 55 || v[:3] != "00-" || v[35] != '-' || v[52] != '-' {
		return "", "", false
	}
	traceID, parent, flags := v[3:35], v[36:52], v[53:]
	if !isLowerHex(traceID) || !isLowerHex(parent) || !isLowerHex(flags) {
		return "", "", false
	}
	if traceID == "00000000000000000000000000000000" || parent == "0000000000000000" {
		return "", "", false // all-zero ids are invalid
	}
	return traceID, flags, true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
