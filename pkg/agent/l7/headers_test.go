package l7

import (
	"net/http"
	"testing"
)

func TestParseTraceparent(t *testing.T) {
	const good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if id, flags, ok := parseTraceparent(good); !ok || id != "4bf92f3577b34da6a3ce929d0e0e4736" || flags != "01" {
		t.Fatalf("%q: %q %q %v", good, id, flags, ok)
	}
	for _, bad := range []string{
		"",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
		"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  // dash misplaced
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // too long
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",  // flags not hex
	} {
		if _, _, ok := parseTraceparent(bad); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

// Every hop gets a new, valid parent id under the caller's trace id.
func TestTraceHeadersNewParent(t *testing.T) {
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	h := http.Header{"Traceparent": {in}}
	if id := traceHeaders(h); id != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("trace id %q", id)
	}
	out := h.Get("Traceparent")
	id, flags, ok := parseTraceparent(out)
	if !ok || id != "4bf92f3577b34da6a3ce929d0e0e4736" || flags != "01" || out == in {
		t.Fatalf("traceparent %q", out)
	}
	h = http.Header{}
	id = traceHeaders(h)
	if tid, _, ok := parseTraceparent(h.Get("Traceparent")); !ok || tid != id || h.Get(HeaderTraceID) != id {
		t.Fatalf("new trace: %q", h)
	}
}
