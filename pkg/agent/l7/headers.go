package l7

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
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
	h.Set(headerTraceparent, "00-"+traceID+"-"+randomHex(8)+"-"+flags)
	id := h.Get(HeaderTraceID)
	if id == "" {
		id = traceID
		h.Set(HeaderTraceID, id)
	}
	return id
}

// parseTraceparent accepts a W3C version-00 traceparent:
// 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>.
func parseTraceparent(v string) (traceID, flags string, ok bool) {
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", "", false
	}
	for _, p := range parts[1:] {
		if !isLowerHex(p) {
			return "", "", false
		}
	}
	if parts[1] == strings.Repeat("0", 32) || parts[2] == strings.Repeat("0", 16) {
		return "", "", false // all-zero ids are invalid
	}
	return parts[1], parts[3], true
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
