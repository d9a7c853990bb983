package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := startProgress(&b, false, false, "applying 3 services from m.yaml")
	p.done("applied 3 services")
	if b.Len() != 0 {
		t.Errorf("not shown, wrote %q", b.String())
	}

	p = startProgress(&b, false, true, "applying 3 services from m.yaml")
	p.done("applied 3 services")
	lines := strings.Split(b.String(), "\n")
	if len(lines) != 3 || lines[0] != "applying 3 services from m.yaml…" || !strings.HasPrefix(lines[1], "applied 3 services in ") {
		t.Errorf("log: %q", b.String())
	}

	b.Reset()
	p = startProgress(&b, true, true, "applying 3 services from m.yaml")
	p.done("")
	if got := b.String(); got != "\r\033[Kapplying 3 services from m.yaml…\r\033[K" {
		t.Errorf("terminal, failed: %q", got)
	}
}
