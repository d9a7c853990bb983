package resilience

import (
	"testing"

	"github.com/hms-node/hms-node/internal/layering"
)

// TestImports keeps the package standard-library only, so the proxy's hot
// path pulls in nothing it cannot read.
func TestImports(t *testing.T) { layering.StdlibOnly(t) }
