package l4

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestGuardContainsPanic(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	ran := false
	Guard(log, "conn 10.0.0.1:5000", func() { panicHere() })
	Guard(log, "fine", func() { ran = true })
	if !ran {
		t.Fatal("Guard did not run fn")
	}
	out := buf.String()
	if n := strings.Count(out, "\n"); n != 1 {
		t.Fatalf("want exactly one log record, got %d:\n%s", n, out)
	}
	for _, want := range []string{`"level":"ERROR"`, `"what":"conn 10.0.0.1:5000"`, `"panic":"boom"`, "panicHere"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// panicHere is a named frame the logged stack must show.
func panicHere() { panic("boom") }
