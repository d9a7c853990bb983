package e2e

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

var benchStarted sync.Map // benchmark name -> its first progress line's time

// benchStep prints one progress line to stderr, so a benchmark that runs
// for minutes shows what it is doing; the table it ends with goes to
// stdout, unmixed.
func benchStep(b *testing.B, format string, args ...any) {
	t0, _ := benchStarted.LoadOrStore(b.Name(), time.Now())
	fmt.Fprintf(os.Stderr, "[%s +%s] %s\n", b.Name(), time.Since(t0.(time.Time)).Round(time.Second), fmt.Sprintf(format, args...))
}
