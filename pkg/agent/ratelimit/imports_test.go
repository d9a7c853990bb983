package ratelimit

import (
	"testing"

	"github.com/hms-node/hms-node/internal/layering"
)

// TestImports keeps the package to the standard library and x/time/rate, so
// the proxy's hot path pulls in nothing it cannot read.
func TestImports(t *testing.T) { layering.StdlibOnly(t, "golang.org/x/time/rate") }
