package mtls

import (
	"testing"

	"github.com/hms-node/hms-node/internal/layering"
)

// TestImportsStdlibOnly keeps pkg/tls at the bottom of the layering: the
// standard library only, so it knows nothing of eBPF, etcd or other pkg/.
func TestImportsStdlibOnly(t *testing.T) { layering.StdlibOnly(t) }
